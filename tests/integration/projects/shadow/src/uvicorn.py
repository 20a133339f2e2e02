# A stub, as a project written for Pyodide might ship one. duro must never import it.
raise RuntimeError("the project's stub uvicorn.py was imported")
