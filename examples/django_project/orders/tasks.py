"""The shop's background work: a Django task, and a task of the pgjobs App."""

from django.utils import timezone
from shop.jobs import app

from orders.models import Order

try:
    from django.tasks import task  # Django 6
except ImportError:
    from django_tasks import task  # Django 5.2: the backport


@task(queue_name="mail")
def send_confirmation(order_id: int) -> str:
    order = Order.objects.get(pk=order_id)
    order.confirmed_at = timezone.now()
    order.save(update_fields=["confirmed_at"])
    return f"confirmation sent to {order.email}"


@app.task
def pack(order_id: int) -> None:
    Order.objects.filter(pk=order_id).update(packed=True)
