"""Concrete workflows, their host ports and adapters. Each registers through an entry point."""
