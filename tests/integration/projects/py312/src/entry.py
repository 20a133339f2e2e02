from workers import DurableObject, Response, WorkerEntrypoint

from typed import Item, Stack, first


class Stacks(DurableObject):
    async def push(self, item: Item) -> list[Item]:
        stored = self.ctx.storage.kv.get("items") or []
        stack = Stack[Item]()
        for x in [*stored, item]:
            stack.push(x)
        self.ctx.storage.kv.put("items", stack.items)
        return stack.items


class Default(WorkerEntrypoint):
    async def fetch(self, request):
        items = await self.env.STACKS.getByName("s").push(request.url.rsplit("/", 1)[-1])
        return Response.json({"items": items, "first": first(items), "alias": Item.__name__})
