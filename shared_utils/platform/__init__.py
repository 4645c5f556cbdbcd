"""OS-specific parts behind small interfaces, one place each: process groups, signals and parent
death (``processes``), the virtual display for modules that draw (``xvfb``). The rest of the code
calls these and never assumes POSIX itself.
"""
