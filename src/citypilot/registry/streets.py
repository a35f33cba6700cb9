"""The street an asset stands on, in SQL over ``assets a``: one definition for the command selector and
the energy figures by street.

The sheet's ``street`` attribute when it has one, else the address without its house number
("12 bis rue Monge, Dijon" -> "rue Monge, Dijon").
"""

from __future__ import annotations

_WITHOUT_NUMBER = ("regexp_replace(coalesce(a.address, ''), '^\\s*\\d+\\s*(bis|ter|quater)?\\s*,?\\s*', '', 'i')")

# "rue Monge, Dijon": the street with its commune, as the energy figures name it.
STREET_SQL = f"coalesce(nullif(a.attributes->>'street', ''), nullif({_WITHOUT_NUMBER}, ''))"
# "rue Monge": the street's name alone, as an operator types it (the commune is a selector of its own).
STREET_NAME_SQL = f"coalesce(nullif(a.attributes->>'street', ''), btrim(split_part({_WITHOUT_NUMBER}, ',', 1)))"
