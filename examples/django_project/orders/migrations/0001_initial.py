"""The orders table (as `manage.py makemigrations` wrote it, formatted)."""

from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True

    dependencies = ()

    operations = (
        migrations.CreateModel(
            name="Order",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("email", models.EmailField(max_length=254)),
                ("confirmation", models.CharField(blank=True, max_length=64)),
                ("confirmed_at", models.DateTimeField(null=True)),
                ("packed", models.BooleanField(default=False)),
            ],
            options={
                "constraints": [
                    models.UniqueConstraint(
                        deferrable=models.Deferrable.DEFERRED,
                        fields=("email",),
                        name="one_order_per_email",
                    )
                ],
            },
        ),
    )
