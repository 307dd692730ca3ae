"""Example user handlers, packaged into an image by worker_image/example/Dockerfile."""

from kubeworkers import App, JobContext
from pydantic import BaseModel

app = App("my_app")


class Greeting(BaseModel):
    name: str


@app.handler("greet", timeout=10)
async def greet(inp: Greeting, ctx: JobContext) -> dict[str, str]:
    """Say hello (registered as ``my_app.greet``)."""
    await ctx.progress(1.0, "greeted")
    return {"greeting": f"hello, {inp.name}"}
