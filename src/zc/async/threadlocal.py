"""What a running job may ask about itself (placeholder, being written)."""
import threading


class Local(threading.local):
    job = None
    dispatcher = None
    name = None


local = Local()
