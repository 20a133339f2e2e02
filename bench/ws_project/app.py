"""The WebSocket bench workload.

GET /room/<name>  (WebSocket) join room <name> as a hibernatable socket
  text "b:<k>"    the room sends "<k>" to every socket it has (a broadcast)
GET /stats        instances in memory that have sockets, and hibernatable sockets
"""

from duro import DurableObject, Response, WebSocketPair, WorkerEntrypoint


class Room(DurableObject):
    async def fetch(self, request):
        client, server = WebSocketPair()
        self.ctx.accept_websocket(server)
        return Response(None, status=101, web_socket=client)

    async def websocket_message(self, ws, message):
        if message.startswith("b:"):
            text = message[2:]
            for other in self.ctx.get_websockets():
                other.send(text)


class Default(WorkerEntrypoint):
    async def fetch(self, request):
        parts = request.path.strip("/").split("/")
        if len(parts) == 2 and parts[0] == "room":
            return await self.env.ROOM.get_by_name(parts[1]).fetch(request)
        if parts == ["stats"]:
            rt = self.env.ROOM._runtime
            awake = sum(1 for a in rt.activations() if rt.hibernation.has_sockets(a.unique_key, str(a.id)))
            return Response.json({"instances_with_sockets": awake, **rt.hibernation.statistics()})
        return Response("not found", status=404)
