"""Placing an order: the order and its two jobs in one transaction."""

from django.db import IntegrityError, connection, transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from orders.models import Order
from orders.tasks import pack, send_confirmation


@require_GET
def order_form(request: HttpRequest) -> HttpResponse:
    return render(request, "orders/form.html")


@require_POST
def place_order(request: HttpRequest) -> HttpResponse:
    email = request.POST["email"]
    try:
        with transaction.atomic():
            order = Order.objects.create(email=email)
            # Django's Tasks framework: enqueued in this transaction by pgjobs' backend.
            confirmation = send_confirmation.enqueue(order.pk)
            # A pgjobs task, on Django's connection: in this transaction too.
            pack.enqueue(connection, order_id=order.pk)
            order.confirmation = confirmation.id
            order.save(update_fields=["confirmation"])
    except IntegrityError:  # the address has ordered: no order, and no job either
        return HttpResponse(f"{email} has already ordered", status=409)
    return redirect("order_status", pk=order.pk)


@require_GET
def order_status(request: HttpRequest, pk: int) -> JsonResponse:
    order = get_object_or_404(Order, pk=pk)
    result = send_confirmation.get_result(order.confirmation)
    return JsonResponse(
        {
            "email": order.email,
            "packed": order.packed,
            "confirmed": order.confirmed_at is not None,
            "confirmation": result.status,
            "message": result.return_value if result.status == "SUCCESSFUL" else None,
        }
    )
