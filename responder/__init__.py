"""responder: turn pager webhooks into playbook runs that manage Pulumi burner stacks."""

__version__ = "0.1.0"
