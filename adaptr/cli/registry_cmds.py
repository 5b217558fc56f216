"""Registry commands (placeholder: being written)."""


def register(cli):
    pass
