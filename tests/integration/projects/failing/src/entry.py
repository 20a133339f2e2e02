from workers import Response, WorkerEntrypoint

import settings


class Default(WorkerEntrypoint):
    async def fetch(self, request):
        return Response(settings.GREETING)
