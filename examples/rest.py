"""A small REST API: a to-do list kept in memory, with plain (sync) handlers.

Run: uvicorn examples.rest:app   (or: python examples/rest.py)
Try: curl -X POST localhost:8000/api/todos -H 'content-type: application/json' -d '{"title": "tune"}'
     curl localhost:8000/api/todos
"""

import itertools
import threading

from cello import App, Blueprint, HTTPException, Response

app = App()
api = Blueprint("/api")

todos: dict[int, dict] = {}
ids = itertools.count(1)
lock = threading.Lock()  # sync handlers run in parallel threads


@api.get("/todos")
def list_todos(request):
    done = request.query.get("done")
    with lock:
        items = list(todos.values())
    if done is not None:
        items = [t for t in items if t["done"] == (done == "true")]
    return items


@api.post("/todos")
def create_todo(request):
    data = request.json()
    title = data.get("title") if isinstance(data, dict) else None
    if not isinstance(title, str) or not title.strip():
        raise HTTPException(422, "a todo needs a non-empty 'title'")
    with lock:
        todo = {"id": next(ids), "title": title.strip(), "done": False}
        todos[todo["id"]] = todo
    return Response.json(todo, status=201, headers={"Location": f"/api/todos/{todo['id']}"})


@api.get("/todos/{todo_id:int}")
def get_todo(request):
    with lock:
        todo = todos.get(request.params["todo_id"])
    if todo is None:
        raise HTTPException(404, "no such todo")
    return todo


@api.patch("/todos/{todo_id:int}")
def update_todo(request):
    changes = request.json()
    with lock:
        todo = todos.get(request.params["todo_id"])
        if todo is None:
            raise HTTPException(404, "no such todo")
        if "done" in changes:
            todo["done"] = bool(changes["done"])
        if "title" in changes:
            todo["title"] = str(changes["title"])
        return dict(todo)


@api.delete("/todos/{todo_id:int}")
def delete_todo(request):
    with lock:
        if todos.pop(request.params["todo_id"], None) is None:
            raise HTTPException(404, "no such todo")
    return None  # 204 No Content


app.register_blueprint(api)

if __name__ == "__main__":
    app.run()
