from django.contrib import admin
from django.http import JsonResponse
from django.urls import include, path, re_path

from api.views import api
from project.metrics import metrics_view

admin.site.site_header = "Shepherd operator console"
admin.site.site_title = "Shepherd"
admin.site.index_title = "Scheduler · Agents · Supervisor"
admin.site.site_url = "/"  # "View site" opens the dashboard


def api_not_found(request, rest=""):
    error = {"status": 404, "code": "not_found", "message": f"no API endpoint at {request.path}; see /api/docs"}
    return JsonResponse({"error": {**error, "details": None}}, status=404)


urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/", api.urls),
    path("metrics", metrics_view, name="metrics"),
    re_path(r"^api/(?P<rest>.*)$", api_not_found),
    path("accounts/", include("django.contrib.auth.urls")),
    path("", include("dashboard.urls")),
]
