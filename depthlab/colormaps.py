"""Colour maps as 256x3 uint8 lookup tables, and value -> RGB with a shared scale.

The tables are matplotlib's (3.11), embedded so that drawing needs no matplotlib import
(~0.5 s per process). Produced with:

    from matplotlib import colormaps
    lut = colormaps[name](np.arange(256), bytes=True)[:, :3]   # (256, 3) uint8
    base64.b64encode(lut.tobytes())
"""

import base64

import numpy as np

GREY = (153, 153, 153)  # invalid (non-finite) values; matplotlib's "0.6"

_VIRIDIS_B64 = (
    "RAFURAJVRANXRQVYRQZaRQhbRglcRgteRgxfRg5hRw9iRxFjRxJlRxRmRxVnRxZpRxhqSBlrSBpsSBxuSB1vSB5w"
    "SCBxSCFySCJzSCN0RyV1RyZ2Ryd3Ryh4Ryp5Ryt6Ryx7Ri18Ri98RjB9RjF+RTJ/RTR/RTWARTaBRDeBRDmCQzqD"
    "QzuDQzyEQj2EQj6FQkCFQUGGQUKGQEOHQESHP0WHP0eIPkiIPkmJPUqJPUuJPUyJPE2KPE6KO1CKO1GKOlKLOlOL"
    "OVSLOVWLOFaLOFeMN1iMN1mMNlqMNluMNVyMNV2MNF6NNF+NM2CNM2GNMmKNMmONMWSNMWWNMWaNMGeNMGiNL2mN"
    "L2qNLmuOLmyOLm2OLW6OLW+OLHCOLHGOLHKOK3OOK3SOKnWOKnaOKneOKXiOKXmOKHqOKHqOKHuOJ3yOJ32OJ36O"
    "Jn+OJoCOJoGOJYKOJYONJISNJIWNJIaNI4eNI4iNI4mNIomNIoqNIouNIYyNIY2MIY6MII+MIJCMIJGMH5KMH5OL"
    "H5SLH5WLH5aLHpeKHpiKHpmKHpmKHpqJHpuJHpyJHp2IHp6IHp+IHqCHH6GHH6KGH6OGIKSFIKWFIaaFIaeEIqeE"
    "I6iDI6mCJKqCJauBJqyBJ62AKK5/Ka9/KrB+K7F9LLF9LrJ8L7N7MLR6MrV6M7Z5Nbd4Nrh3OLl2Obl2O7p1Pbt0"
    "PrxzQL1yQr5xRL5wRb9vR8BuScFtS8JsTcJrT8NpUcRoU8VnVcZmV8ZlWcdkW8hiXslhYMlgYspfZMtdZ8xcacxb"
    "a81Zbc5YcM5Wcs9VdNBUd9BSedFRfNJPftJOgdNMg9NLhtRJiNVHi9VGjdZEkNZDktdBldc/l9g+mtg8ndk6n9k4"
    "oto3pdo1p9szqtsyrdwwr9wust0std0rt90put4nvd4mv98kwt8ixd8hx+AfyuAezeAdz+Ec0uEb1OEa1+IZ2uIY"
    "3OIY3+MY4eMY5OMY5+QZ6eQZ7OQa7uUb8eUc8+Ue9uYf+OYh+uYi/eck"
)

_MAGMA_B64 = (
    "AAADAAAEAAAGAQAHAQEJAQELAgINAgIPAwMRBAMTBAQVBQQXBgUZBwUbCAYdCQcfCgciCwgkDAkmDQooDgoqDwss"
    "EAwvEQwxEg0zFA01FQ44Fg46Fw88GA8/GhBBGxBEHBBGHhBJHxFLIBFNIhFQIxFSJRFVJhFXKBFZKhFcKxFeLRBg"
    "LxBiMBBlMhBnNBBoNQ9qNw9sOQ9uOw9vPA9xPg9yQA9zQg90Qw91RQ92Rw93SBB4ShB5SxB5TRF6TxF7UBJ7UhJ8"
    "UxN8VRN9VxR9WBV+WhV+WxZ+XRd+Xhd/YBh/YRh/Yxl/ZRqAZhqAaBuAaRyAaxyAbB2Abh6Bbx6BcR+Bcx+BdCCB"
    "diGBdyGBeSKBeiKBfCOBfiSBfySBgSWBgiWBhCaBhSaBhyeBiSiBiiiBjCmAjSmAjyqAkSqAkiuAlCuAlSyAlyx/"
    "mS1/mi1/nC5/ni5+ny9+oS9+ozB+pDB9pjF9pzF9qTJ8qzN8rDN7rjR7sDR7sTV6szV6tTZ5tjZ5uDd4uTd4uzh3"
    "vTl3vjl2wDp1wjp1wzt0xTx0xjxzyD1yyj5yyz5xzT9wzkBw0EFv0UJu00Jt1ENt1kRs10Vr2UZq2kdp3Ehp3Ulo"
    "3kpn4Etm4Uxm4k1l5E5k5VBj5lFi51Ji6FRh6lVg61Zg7Fhf7Vlf7lte7l1d715d8GBd8WFc8mNc82Vc82db9Ghb"
    "9Wpb9Wxb9m5b9nBb93Fb93Nc+HVc+Hdc+Xlc+Xtd+X1d+n9e+oBe+oJf+4Rg+4Zg+4hh+4pi/Ixj/I5j/JBk/JJl"
    "/JNm/ZVn/Zdo/Zlp/Ztq/Z1r/Z9s/aFu/aJv/aRw/qZx/qhz/qp0/qx1/q52/q94/rF5/rN7/rV8/rd9/rl//ruA"
    "/ryC/r6D/sCF/sKG/sSI/saJ/seL/smN/suO/c2Q/c+S/dGT/dKV/dSX/daY/dia/dqc/dyd/d2f/d+h/eGj/OOl"
    "/OWm/Oao/Oiq/Oqs/Oyu/O6w/PCx/PGz/PO1/PW3+/e5+/m7+/q9+/y/"
)


def _table(encoded: str) -> np.ndarray:
    table = np.frombuffer(base64.b64decode(encoded), dtype=np.uint8).reshape(256, 3)
    table.flags.writeable = False  # shared by every caller
    return table


VIRIDIS = _table(_VIRIDIS_B64)  # (256, 3) uint8
MAGMA = _table(_MAGMA_B64)  # (256, 3) uint8


def lut_index(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Table rows for values on the scale lo..hi, clipped to its ends (as matplotlib does)."""
    span = hi - lo
    if not np.isfinite(span) or span <= 0:  # a flat scale: matplotlib draws its lowest colour
        return np.zeros(np.shape(values), dtype=np.intp)
    with np.errstate(invalid="ignore"):
        scaled = (np.asarray(values, dtype=np.float64) - lo) / span * 256
    return np.clip(np.nan_to_num(scaled, nan=0.0), 0, 255).astype(np.intp)


def colorize(values: np.ndarray, table: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """(H, W) values -> (H, W, 3) uint8 colours on the scale lo..hi; non-finite is grey."""
    rgb = table[lut_index(values, lo, hi)]
    rgb[~np.isfinite(values)] = GREY
    return rgb
