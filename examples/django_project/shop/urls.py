"""The shop's pages: the order form, placing an order, an order's state."""

from django.urls import path
from orders import views

urlpatterns = [
    path("", views.order_form, name="order_form"),
    path("orders", views.place_order, name="place_order"),
    path("orders/<int:pk>", views.order_status, name="order_status"),
]
