"""The GitHub Action side: the event and what to do for it, the sticky pull-request
comment, the report, and ``kfops init``'s scaffolding. Only this stage talks to GitHub."""
