"""Jobs and data for the replay and dry-run tests (zc.async.ops.sandbox).

Worker processes import this module (``--import``) so that the pickles of
these jobs and classes resolve.

An *order* is a ``PersistentList`` of :class:`Item`, whose prices are
text, as a form would store them; :func:`invoice_total` fails on a price
that is not a number, until someone corrects it.  :func:`discount` changes
prices and adds an :class:`Entry` to a log; :func:`drop_first` takes an
item off an order.
"""
import decimal

import persistent
import persistent.list

import zc.asynchronous


class Item(persistent.Persistent):
    """A line of an order: a name and a price (text)."""

    def __init__(self, name, price):
        self.name = name
        self.price = price


class Entry(persistent.Persistent):
    """A line of a log."""

    def __init__(self, note):
        self.note = note


def order(*prices):
    """A new order of items ``a``, ``b`` ... with these prices."""
    return persistent.list.PersistentList(
        Item(chr(ord('a') + number), price)
        for number, price in enumerate(prices))


def invoice_total(items):
    """The total of an order (InvalidOperation for a bad price)."""
    return sum(decimal.Decimal(item.price) for item in items)


async def async_total(items):
    """``invoice_total`` as an ``async def`` job."""
    return invoice_total(items)


def discount(items, log, percent):
    """Lower every price by ``percent`` and log it; report progress as a
    live annotation, and return it and whether this runs in a sandbox."""
    local = zc.asynchronous.local
    local.setLiveAnnotation('progress', 'half way')
    for item in items:
        item.price = str(decimal.Decimal(item.price) * (100 - percent) / 100)
    log.append(Entry('discount %d%%' % (percent,)))
    return local.getLiveAnnotation('progress'), local.isSandbox()


def drop_first(items):
    """Take the first item off an order; return its name."""
    return items.pop(0).name


def rename_all(item, count):
    """Give ``item`` ``count`` new attributes."""
    for number in range(count):
        setattr(item, 'extra%02d' % (number,), number)


def mail_total(items, outbox):
    """Append the total of an order to the file ``outbox`` ("send a
    mail") unless running in a sandbox; fail on a bad price."""
    total = invoice_total(items)
    if not zc.asynchronous.local.isSandbox():
        with open(outbox, 'a') as f:
            f.write('total %s\n' % (total,))
    return total


def check_total(limit, total):
    """A callback: fail when the total of an order is over ``limit``."""
    if total > limit:
        raise ValueError('total %s is over %s' % (total, limit))
    return total
