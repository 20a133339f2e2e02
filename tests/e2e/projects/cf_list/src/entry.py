from urllib.parse import unquote, urlparse

from workers import DurableObject, Response, WorkerEntrypoint


class List(DurableObject):
    async def get_messages(self):
        messages = await self.ctx.storage.get("messages")
        return messages if messages else []

    async def add_message(self, message):
        messages = await self.get_messages()
        messages.append(message)
        await self.ctx.storage.put("messages", messages)
        return

    async def say_hello(self):
        result = self.ctx.storage.sql.exec("SELECT 'Hello, World!' as greeting").one()
        return result.greeting


class Default(WorkerEntrypoint):
    async def fetch(self, request):
        url = urlparse(request.url)
        path = url.path.split("/")[1:]
        if len(path) < 2 or path[0] == "":
            return Response("Usage: /<list>/add/<message> or /<list>/show or /<list>/hello", status=400)
        list_name = path[0]
        action = path[1]
        stub = self.env.LIST.get(self.env.LIST.idFromName(list_name))
        if action == "add" and len(path) > 2:
            message = unquote(path[2])
            await stub.add_message(message)
            return Response(f"Message '{message}' added to list '{list_name}'")
        if action == "show":
            messages = await stub.get_messages()
            return Response.json(messages)
        if action == "hello":
            return Response(await stub.say_hello())
        return Response("Not found", status=404)
