"""The HTTP surface: webhook intake and the JSON API (`app.http_app`); `responder.daemon` assembles
the daemon around it."""
