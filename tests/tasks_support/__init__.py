"""Task handlers and a worker process for the task runner's tests (importable by name,
so child processes can unpickle them)."""
