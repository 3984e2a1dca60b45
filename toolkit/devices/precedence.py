"""Which benchmark options apply on a device: one rule, used by profile, tune and validate.

    explicit (a flag, a config, a tuning candidate)  >  the device's profile  >  defaults

Field by field: a value the caller set (anything but zero / empty, as on the wire) wins;
otherwise the profile's (`DeviceProfile.benchmark_options()`: `threads`, `power_sensor` and its
`benchmark:` mapping); a field neither sets stays zero and the agent fills its default from
`device_agent.measure.options.DEFAULTS` (the one place defaults are stated). A boolean can only
be switched on by a layer, never back off by a later one.
"""

from __future__ import annotations

from typing import Optional

from toolkit.devices.profile import DeviceProfile
from toolkit.measurement import BenchmarkOptions


def resolve_options(
    explicit: Optional[BenchmarkOptions], profile: Optional[DeviceProfile]
) -> BenchmarkOptions:
    """The options to send to the device described by `profile`.

    Args:
        explicit: what the caller set (None: nothing).
        profile: the device's profile (None: no profile layer).

    Returns:
        Options with each field from the first layer that sets it (explicit, then profile);
        fields no layer sets stay zero / empty ("the agent's default").
    """
    explicit = explicit or BenchmarkOptions()
    if profile is None:
        return explicit
    return BenchmarkOptions(
        **{**profile.benchmark_options().set_fields(), **explicit.set_fields()}
    )
