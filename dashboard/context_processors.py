from django.conf import settings


def links(request):
    return {"flower_url": settings.SHEPHERD_FLOWER_URL}
