from ldct.cli import entry

entry()
