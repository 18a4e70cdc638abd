from django.conf import settings
from django.contrib import admin
from django.urls import path
from django.views.generic import RedirectView

admin.site.site_header = "Shepherd operator console"
admin.site.site_title = "Shepherd"
admin.site.index_title = "Scheduler · Agents · Supervisor"
admin.site.site_url = settings.SHEPHERD_FLOWER_URL  # "View site" opens Flower (also behind a login)

urlpatterns = [
    path("admin/", admin.site.urls),
    path("", RedirectView.as_view(pattern_name="admin:index", permanent=False)),
]
