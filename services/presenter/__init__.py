"""PsychoPy presenter module.

The TCP server (parent process) never touches OpenGL: a child process started with
``sys.executable -m services.presenter.child`` owns the PsychoPy window on its main thread and
talks to the parent over two pipes (see :mod:`services.presenter.ipc`). Importing this package
imports neither PsychoPy nor the server.
"""
