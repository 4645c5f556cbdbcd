"""OS-specific parts behind small interfaces: virtual display (``xvfb``) ...

Each module here keeps one POSIX-only mechanism (an X server started on its own, process groups,
signals) in one place, so the rest of the mesh does not assume it and a Windows lab PC only
misses the feature, not the whole module.
"""
