from django.urls import path

from dashboard import views

app_name = "dashboard"

urlpatterns = [
    path("", views.overview, name="overview"),
    path("agents/", views.agents, name="agents"),
    path("agents/<int:agent_id>/<str:action>/", views.agent_action, name="agent_action"),
    path("items/", views.items, name="items"),
    path("items/<int:work_item_id>/", views.item, name="item"),
    path("items/<int:work_item_id>/<str:action>/", views.item_action, name="item_action"),
    path("requests/", views.requests_list, name="requests"),
    path("requests/<int:request_id>/", views.request_detail, name="request"),
    path("dead-letter/", views.dead_letter, name="dead_letter"),
    path("dead-letter/<int:work_item_id>/edit/", views.dead_letter_edit, name="dead_letter_edit"),
    path("interventions/", views.interventions, name="interventions"),
    path("escalations/", views.escalations, name="escalations"),
    path("escalations/<int:escalation_id>/<str:action>/", views.escalation_action, name="escalation_action"),
    path("submit/", views.submit, name="submit"),
    path("submit/raw/", views.submit_raw, name="submit_raw"),
    path("submit/batch/", views.submit_batch, name="submit_batch"),
    path("submit/request/", views.submit_request, name="submit_request"),
    path("submit/<str:work_type>/", views.submit, name="submit_type"),
]
