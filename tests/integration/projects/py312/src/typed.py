# Python 3.12 syntax: a type alias statement and PEP 695 generics.
type Item = str | int


class Stack[T]:
    def __init__(self) -> None:
        self.items: list[T] = []

    def push(self, item: T) -> "Stack[T]":
        self.items.append(item)
        return self


def first[T](values: list[T]) -> T:
    return values[0]
