"""E-mail intake (``tagus run mail-poller``, and ``tagus serve intake``): each tenant's
IMAP mailbox (configuration kind ``mailbox``), its attachments ingested like file
uploads, each message exactly once.

- ``wire``: IMAP FETCH answers and BODYSTRUCTURE as data (pure);
- ``decode``: transfer encodings undone slice by slice (pure);
- ``plan``: what to do with one message: ingest which attachment with which mapping,
  refuse what with which reason (pure);
- ``imap``: one IMAP session (blocking, streamed partial fetches);
- ``reply``: the optional answer to the sender with the accounting (pure text, SMTP);
- ``poller``: ``MailPoller``, the passes and the service loop.
"""

from producers.mail.imap import PROCESSED, ImapSession
from producers.mail.plan import REASONS, Ingest, Message, Refuse, plan
from producers.mail.poller import MailOptions, MailPoller, PassStats

__all__ = ["PROCESSED", "REASONS", "ImapSession", "Ingest", "MailOptions", "MailPoller",
           "Message", "PassStats", "Refuse", "plan"]
