"""`gateway.wsgi:app` for gunicorn (gateway/gunicorn_conf.py): the app built from the environment."""
from .app import create_app

app = create_app()
