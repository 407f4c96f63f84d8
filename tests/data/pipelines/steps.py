"""Functions for python_steps.yaml (the `python` kind calls them on whole batches)."""


def shout(items, suffix="!"):
    return [{"text": [item["text"][0].upper() + suffix.encode()]} for item in items]


def words(items):
    return [{"count": [len(item["text"][0].split())]} for item in items]
