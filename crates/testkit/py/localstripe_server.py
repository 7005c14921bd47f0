"""localstripe, a stateful Stripe emulator, on loopback, for the payment tests.

    python localstripe_server.py [--port N] [--watch-stdin]

localstripe's own command (`localstripe --port N`) listens on every address
and keeps its objects in /tmp/localstripe.pickle, one file for every instance
on the machine, which tests running side by side would share. This starts the
same application (localstripe.server.app, unchanged) on 127.0.0.1 only (port
0, the default, picks a free one), keeps its objects in memory only, checks
that it answers an authenticated request, and prints one line on standard
output:

    listening http://127.0.0.1:PORT

then serves Stripe's REST API (any secret key starting `sk_`) and
localstripe's `/_config` routes until killed. Request logs go to standard
error.

localstripe has no Checkout sessions, no customer portal, and never sends
`invoice.paid`, `charge.refunded` or `charge.dispute.created`. Beside its
unchanged application this adds, built from localstripe's own objects and
sent through its own webhook sender (so signed as it signs):

- `POST /v1/checkout/sessions` (mode `subscription`, `customer`,
  `line_items[0][price]`, `client_reference_id`, `success_url`,
  `cancel_url`, `metadata`) and `GET /v1/checkout/sessions/{id}`; the
  session's `url` is a hosted page here. localstripe has plans, not prices:
  the price id names a localstripe plan.
- The hosted checkout page, `/hosted/checkout/{id}`, with a Pay button
  (`POST /hosted/checkout/{id}/pay`): it attaches the test card 4242... to
  the customer as its default, creates the subscription in localstripe
  (whose own `customer.subscription.created` and
  `invoice.payment_succeeded` follow), sends `invoice.paid` for the first
  invoice (`billing_reason` `subscription_create`), then
  `checkout.session.completed`, and redirects to the `success_url`.
- `POST /v1/billing_portal/sessions` (`customer`, `return_url`) and its
  page, `/hosted/portal/{id}`, listing the customer's live subscriptions
  with "Cancel subscription" (`POST /hosted/portal/{id}/cancel`), which
  deletes the subscription in localstripe (its own
  `customer.subscription.deleted`) and redirects to the `return_url`.
- Test routes, loopback only, each taking `subscription`:
  `POST /_test/renew` moves the subscription to its next period (as if a
  month passed), has localstripe invoice and charge it, and sends
  `invoice.paid` (`billing_reason` `subscription_cycle`);
  `POST /_test/refund` refunds the latest invoice's charge in localstripe
  and sends `charge.refunded` (the charge naming its invoice, as Stripe's
  do); `POST /_test/dispute` sends `charge.dispute.created` for that
  charge (localstripe has no disputes: the dispute object is built here).
  Each answers the event's object.
- `POST /v1/refunds` is localstripe's own, which sends no webhook; as
  Stripe does, a refund made there is followed by `charge.refunded` for
  its charge (naming the invoice it paid).

The hosted pages and test routes need no secret key; everything under
`/v1` still does.
"""

import argparse
import json
import asyncio
import logging
import os
import socket
import sys
import threading
import time
import urllib.request

from aiohttp import web
from localstripe import resources
from localstripe.errors import UserError
from localstripe.resources import (
    Charge,
    Customer,
    Event,
    Invoice,
    PaymentMethod,
    Refund,
    Subscription,
    random_id,
)
from localstripe.server import app, get_post_data, json_response
from localstripe.webhooks import schedule_webhook

# Objects localstripe does not have, kept here: Checkout and portal sessions.
CHECKOUT = {}
PORTAL = {}
BASE = {"url": ""}
MONTH = 30 * 86400


class Exported:
    """A plain object localstripe's Event can carry (it calls `_export`)."""

    def __init__(self, data):
        self.data = data

    def _export(self):
        return dict(self.data)


def send(kind, obj):
    schedule_webhook(Event(kind, obj if hasattr(obj, "_export") else Exported(obj)))


@web.middleware
async def open_pages(request, handler):
    # Hosted pages are for the buyer's browser and test routes for the test:
    # neither carries a secret key, so localstripe's key check is skipped.
    if request.path.startswith("/hosted/") or request.path.startswith("/_test/"):
        if request.path.startswith("/_test/") and request.remote not in ("127.0.0.1", "::1"):
            return web.Response(status=403, text="loopback only")
        try:
            return await request.match_info.handler(request)
        except UserError as e:
            return e.to_response()
    return await handler(request)


@web.middleware
async def refund_webhooks(request, handler):
    # localstripe refunds through /v1/refunds and tells nobody; Stripe sends
    # charge.refunded for the charge.
    response = await handler(request)
    if request.method == "POST" and request.path == "/v1/refunds" and response.status == 200:
        refund = Refund._api_retrieve(json.loads(response.text)["id"])
        charge = Charge._api_retrieve(refund.charge)
        charge.invoice = next(
            (
                key.split(":", 1)[1]
                for key, inv in list(resources.store.items())
                if key.startswith("invoice:") and inv.charge is not None and inv.charge.id == charge.id
            ),
            None,
        )
        send("charge.refunded", charge)
    return response


def page(title, body):
    return web.Response(
        content_type="text/html",
        text=f"<!doctype html><html><head><title>{title}</title></head><body>{body}</body></html>",
    )


def see_other(url):
    raise web.HTTPSeeOther(url)


async def create_checkout(request):
    data = await get_post_data(request)
    try:
        assert data.get("mode") == "subscription"
        customer = data["customer"]
        price = data["line_items"][0]["price"]
        assert isinstance(customer, str) and isinstance(price, str)
        for url in ("success_url", "cancel_url"):
            assert str(data.get(url, "")).startswith("http")
    except (AssertionError, KeyError, IndexError, TypeError):
        raise UserError(400, "Bad request")
    Customer._api_retrieve(customer)
    plan = resources.Plan._api_retrieve(price)
    sid = "cs_test_" + random_id(24)
    session = {
        "id": sid,
        "object": "checkout.session",
        "mode": "subscription",
        "customer": customer,
        "client_reference_id": data.get("client_reference_id"),
        "metadata": data.get("metadata") or {},
        "success_url": data["success_url"],
        "cancel_url": data["cancel_url"],
        "status": "open",
        "payment_status": "unpaid",
        "subscription": None,
        "amount_total": plan.amount,
        "currency": plan.currency,
        "created": int(time.time()),
        "url": f"{BASE['url']}/hosted/checkout/{sid}",
        "_price": price,
        "_subscription_metadata": (data.get("subscription_data") or {}).get("metadata") or {},
    }
    CHECKOUT[sid] = session
    return json_response(public(session))


def public(session):
    return {k: v for k, v in session.items() if not k.startswith("_")}


def checkout_of(request):
    session = CHECKOUT.get(request.match_info["id"])
    if session is None:
        raise UserError(404, "Not Found")
    return session


async def get_checkout(request):
    return json_response(public(checkout_of(request)))


async def checkout_page(request):
    session = checkout_of(request)
    if session["status"] != "open":
        return page("Paid", "<p>This checkout is complete.</p>")
    return page(
        "Checkout",
        f"<h1>Subscribe to {session['_price']}</h1>"
        f"<p>{session['amount_total']} {session['currency']} a month</p>"
        f"<form method=post action=/hosted/checkout/{session['id']}/pay>"
        "<button type=submit>Pay</button></form>",
    )


async def pay(request):
    session = checkout_of(request)
    if session["status"] != "open":
        raise UserError(400, "This checkout is already complete")
    customer = Customer._api_retrieve(session["customer"])
    card = PaymentMethod(
        type="card",
        card={"number": "4242424242424242", "exp_month": "12", "exp_year": "2040", "cvc": "123"},
    )
    PaymentMethod._api_attach(card.id, customer=customer.id)
    customer.invoice_settings["default_payment_method"] = card.id
    sub = Subscription(
        customer=customer.id,
        items=[{"plan": session["_price"]}],
        metadata=dict(session["_subscription_metadata"]),
    )
    invoice = Invoice._api_retrieve(sub.latest_invoice)
    invoice.billing_reason = "subscription_create"
    send("invoice.paid", invoice)
    session.update(status="complete", payment_status="paid", subscription=sub.id)
    send("checkout.session.completed", public(session))
    see_other(session["success_url"])


async def create_portal(request):
    data = await get_post_data(request)
    customer = data.get("customer")
    if not isinstance(customer, str) or not str(data.get("return_url", "")).startswith("http"):
        raise UserError(400, "Bad request")
    Customer._api_retrieve(customer)
    pid = "bps_" + random_id(24)
    session = {
        "id": pid,
        "object": "billing_portal.session",
        "customer": customer,
        "return_url": data["return_url"],
        "created": int(time.time()),
        "url": f"{BASE['url']}/hosted/portal/{pid}",
    }
    PORTAL[pid] = session
    return json_response(session)


def portal_of(request):
    session = PORTAL.get(request.match_info["id"])
    if session is None:
        raise UserError(404, "Not Found")
    return session


def live_subscriptions(customer):
    return [
        s
        for s in Subscription._api_list_all(None, customer=customer, limit=99)._list
        if s.status not in ("canceled", "incomplete_expired")
    ]


async def portal_page(request):
    session = portal_of(request)
    rows = "".join(
        f"<li>{s.plan.id}, paid until {s.current_period_end}"
        f"<form method=post action=/hosted/portal/{session['id']}/cancel>"
        f"<input type=hidden name=subscription value={s.id}>"
        "<button type=submit>Cancel subscription</button></form></li>"
        for s in live_subscriptions(session["customer"])
    )
    return page("Your subscription", f"<ul>{rows}</ul><a href={session['return_url']}>Back</a>")


async def portal_cancel(request):
    session = portal_of(request)
    form = await request.post()
    sub = Subscription._api_retrieve(form.get("subscription", ""))
    if sub.customer != session["customer"]:
        raise UserError(404, "Not Found")
    Subscription._api_delete(sub.id)
    see_other(session["return_url"])


async def subscription_of(request):
    data = await get_post_data(request)
    sub = data.get("subscription") if data else None
    if not isinstance(sub, str):
        raise UserError(400, "Expected subscription")
    return Subscription._api_retrieve(sub)


def latest_charge(sub):
    invoice = Invoice._api_retrieve(sub.latest_invoice)
    charge = invoice.charge
    if charge is None:
        raise UserError(400, "The subscription's latest invoice has no charge")
    # Stripe's charges name the invoice they paid; localstripe's do not.
    charge.invoice = invoice.id
    return charge


async def renew(request):
    sub = await subscription_of(request)
    sub.start_date = sub.current_period_end
    invoice = Invoice(
        customer=sub.customer,
        subscription=sub.id,
        items=list(sub.items._list),
        date=sub.current_period_start,
    )
    invoice._finalize()
    Invoice._api_pay_invoice(invoice.id)
    sub.latest_invoice = invoice.id
    invoice.billing_reason = "subscription_cycle"
    send("invoice.paid", invoice)
    return json_response(invoice._export())


async def refund(request):
    sub = await subscription_of(request)
    charge = latest_charge(sub)
    Refund(charge=charge.id)
    send("charge.refunded", charge)
    return json_response(charge._export())


async def dispute(request):
    sub = await subscription_of(request)
    charge = latest_charge(sub)
    dispute = {
        "id": "dp_" + random_id(24),
        "object": "dispute",
        "amount": charge.amount,
        "currency": charge.currency,
        "charge": charge.id,
        "reason": "fraudulent",
        "status": "needs_response",
        "created": int(time.time()),
    }
    send("charge.dispute.created", dispute)
    return json_response(dispute)


def extend(app):
    app.middlewares.insert(0, open_pages)
    app.middlewares.append(refund_webhooks)
    app.router.add_post("/v1/checkout/sessions", create_checkout)
    app.router.add_get("/v1/checkout/sessions/{id}", get_checkout)
    app.router.add_get("/hosted/checkout/{id}", checkout_page)
    app.router.add_post("/hosted/checkout/{id}/pay", pay)
    app.router.add_post("/v1/billing_portal/sessions", create_portal)
    app.router.add_get("/hosted/portal/{id}", portal_page)
    app.router.add_post("/hosted/portal/{id}/cancel", portal_cancel)
    app.router.add_post("/_test/renew", renew)
    app.router.add_post("/_test/refund", refund)
    app.router.add_post("/_test/dispute", dispute)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument(
        "--watch-stdin",
        action="store_true",
        help="exit when standard input closes (the parent died)",
    )
    args = parser.parse_args()

    # Objects stay in this process: nothing read from or written to /tmp.
    resources.Store.dump_to_disk = lambda self: None

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", args.port))
    port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    BASE["url"] = url
    extend(app)

    logger = logging.getLogger("aiohttp.access")
    logger.setLevel(logging.DEBUG)
    logger.addHandler(logging.StreamHandler(sys.stderr))

    loop = asyncio.new_event_loop()
    started = threading.Event()

    def serve():
        asyncio.set_event_loop(loop)

        async def start():
            runner = web.AppRunner(app, access_log=logger)
            await runner.setup()
            await web.SockSite(runner, sock).start()

        loop.run_until_complete(start())
        started.set()
        loop.run_forever()

    threading.Thread(target=serve, daemon=True).start()
    if not started.wait(60):
        sys.exit("localstripe did not start within 60 s")

    check = urllib.request.Request(
        f"{url}/v1/customers?limit=1",
        headers={"Authorization": "Bearer sk_test_ready"},
    )
    with urllib.request.urlopen(check, timeout=30) as answer:
        if answer.status != 200:
            sys.exit(f"localstripe answered HTTP {answer.status}")

    print(f"listening {url}", flush=True)
    if args.watch_stdin:
        sys.stdin.read()
        os._exit(0)
    threading.Event().wait()


if __name__ == "__main__":
    main()
