"""The built-in rules, written as plugins: they register through the same hooks a user's plugin uses."""
