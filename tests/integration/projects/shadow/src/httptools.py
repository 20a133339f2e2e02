# A stub; duro must never import it.
raise RuntimeError("the project's stub httptools.py was imported")
