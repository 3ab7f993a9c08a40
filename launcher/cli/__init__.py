"""The command line: the app, option sets, connection factories, views, and one module per verb."""
