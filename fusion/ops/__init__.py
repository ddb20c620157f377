"""The ops review web app and the shopper API.

* :mod:`fusion.ops.auth`: staff users (argon2 password hashes, roles), login sessions, CSRF tokens, login rate
  limiting, and the shoppers' bearer tokens.
* :mod:`fusion.ops.queue`: the review queue (open items, oldest first, counts and ages per category).
* :mod:`fusion.ops.review`: every ops action on a visit (confirm, remove, add, move, approve, refund;
  disputes; unassigned events), each one audited, money through the payment gateway; the visit page's reads.
* :mod:`fusion.ops.shopper`: what a shopper sees of their visits, refunds and disputes.
* :mod:`fusion.ops.tap`: keeps the evidence around each shelf event (weight samples, camera tracks).
* :mod:`fusion.ops.images`: the floor plan, weight trace and annotated camera frames, drawn with OpenCV.
* :mod:`fusion.ops.app`: the FastAPI app factory; :mod:`fusion.ops.pages`: its pages, images and forms;
  :mod:`fusion.ops.shopper_api`: the shoppers' JSON API.
"""
