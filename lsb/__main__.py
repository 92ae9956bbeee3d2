from .surfaces.cli import run

run()
