"""The `ktx` command line: a thin shell over library functions a script can call.

Each subcommand is a module here with `add_parser(subcommands)` and a library function that does
the work and returns plain data (`doctor.doctor_report()`, `inspect.inspect_report(path)`); the
command only prints that data, as `rich` tables or as JSON.
"""
