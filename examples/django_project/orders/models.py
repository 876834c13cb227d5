"""An order: one per email address, checked when the transaction commits."""

from django.db import models


class Order(models.Model):
    email = models.EmailField()
    confirmation = models.CharField(max_length=64, blank=True)  # the task result's id
    confirmed_at = models.DateTimeField(null=True)
    packed = models.BooleanField(default=False)

    class Meta:
        constraints = (
            # Deferred: a second order of an address fails at COMMIT, after its jobs
            # were enqueued, and takes them with it.
            models.UniqueConstraint(
                fields=["email"], name="one_order_per_email", deferrable=models.Deferrable.DEFERRED
            ),
        )
