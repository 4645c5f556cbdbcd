"""``python -m control_room ...`` (what ``make run`` calls)."""

from control_room.cli import main

if __name__ == "__main__":
    main()
