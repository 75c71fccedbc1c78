"""The commands floor: one thin module per command (parse the arguments, call the library, print).

Nothing below this floor imports from it. ``rtmdet_keras/cli.py`` holds the ``rtmdet`` group and the
options every command shares; the ``python -m rtmdet_keras.<cmd>`` entry points are small modules
that hand over to the command here.
"""
