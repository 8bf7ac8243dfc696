"""A thin ctypes binding to the EPANET 2.2 engine that ships inside wntr.

wntr's ``EpanetSimulator`` runs a whole simulation and reads the binary output at report
steps; the twin needs every hydraulic step (EPANET inserts steps when a tank fills or a
control fires), must change pump settings between steps, and re-runs the same network
hundreds of times for the optimiser.  So it opens the project once through the same
library with the toolkit API and steps it.  Each ``EpanetProject`` owns an EPANET
project handle and a private temporary directory (the .inp copy, report and output
files), so projects in different threads do not share state: ctypes releases the GIL
while EPANET computes.

Values cross this boundary in the .inp's own units; ``network.py`` converts to SI.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import tempfile
import threading
from importlib.resources import files

from processors.simulate.errors import NetworkInputError, SimulationError

# Node properties
ELEVATION, BASEDEMAND, TANKLEVEL, DEMAND, HEAD, PRESSURE = 0, 1, 8, 9, 10, 11
TANKVOLUME, MINLEVEL, MAXLEVEL = 24, 20, 21
# Link properties
INITSTATUS, INITSETTING, FLOW, HEADLOSS, STATUS, SETTING, ENERGY = 4, 5, 8, 10, 11, 12, 13
LINKPATTERN, PUMP_STATE = 15, 16
# Time parameters
DURATION, HYDSTEP, PATTERNSTEP, PATTERNSTART, REPORTSTEP, REPORTSTART = 0, 1, 3, 4, 5, 6
RULESTEP, STARTTIME = 7, 10
# Counts
NODECOUNT, TANKCOUNT, LINKCOUNT, PATCOUNT, CURVECOUNT, CONTROLCOUNT, RULECOUNT = range(7)
# Options
DEMANDMULT = 4
# Node and link types
JUNCTION, RESERVOIR, TANK = 0, 1, 2
PUMP = 2
# Pump states reported by PUMP_STATE
PUMP_XHEAD, PUMP_CLOSED, PUMP_OPEN, PUMP_XFLOW = 0, 2, 3, 5
# EN_initH flag: re-initialise link flows (so a run never depends on the previous one),
# do not save a hydraulics file.
INIT_FLOWS = 10

_lock = threading.Lock()
_lib: ctypes.CDLL | None = None


def _load() -> ctypes.CDLL:
    global _lib
    with _lock:
        if _lib is None:
            from wntr.epanet import toolkit

            lib = ctypes.cdll.LoadLibrary(str(files("wntr.epanet").joinpath(toolkit.libepanet)))
            P, I, D, L = ctypes.c_void_p, ctypes.c_int, ctypes.c_double, ctypes.c_long
            pI, pD, pL = ctypes.POINTER(I), ctypes.POINTER(D), ctypes.POINTER(L)
            sigs = {
                "EN_createproject": [ctypes.POINTER(P)], "EN_deleteproject": [P],
                "EN_open": [P, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p],
                "EN_close": [P], "EN_openH": [P], "EN_initH": [P, I], "EN_runH": [P, pL],
                "EN_nextH": [P, pL], "EN_closeH": [P],
                "EN_getcount": [P, I, pI], "EN_getflowunits": [P, pI],
                "EN_getnodeindex": [P, ctypes.c_char_p, pI],
                "EN_getlinkindex": [P, ctypes.c_char_p, pI],
                "EN_getnodevalue": [P, I, I, pD], "EN_setnodevalue": [P, I, I, D],
                "EN_getlinkvalue": [P, I, I, pD], "EN_setlinkvalue": [P, I, I, D],
                "EN_gettimeparam": [P, I, pL], "EN_settimeparam": [P, I, L],
                "EN_getoption": [P, I, pD], "EN_setoption": [P, I, D],
                "EN_getcontrol": [P, I, pI, pI, pD, pI, pD], "EN_deletecontrol": [P, I],
                "EN_setcontrol": [P, I, I, I, D, I, D],
                "EN_getrule": [P, I, pI, pI, pI, pD], "EN_deleterule": [P, I],
                "EN_getthenaction": [P, I, I, pI, pI, pD],
                "EN_getelseaction": [P, I, I, pI, pI, pD],
                "EN_getnumdemands": [P, I, pI], "EN_getbasedemand": [P, I, I, pD],
                "EN_setbasedemand": [P, I, I, D],
            }
            for name, args in sigs.items():
                fn = getattr(lib, name)
                fn.argtypes = args
                fn.restype = I
            _lib = lib
    return _lib


class EpanetProject:
    """One EPANET project opened on an .inp text.  Not thread-safe itself: one per thread.

    Use as a context manager (or call ``close``): it removes its temporary directory.
    """

    def __init__(self, inp_text: str) -> None:
        self._lib = _load()
        self._dir = tempfile.mkdtemp(prefix="tagus-epanet-")
        self.warnings: set[int] = set()
        inp = os.path.join(self._dir, "net.inp")
        with open(inp, "w", encoding="latin-1", errors="replace") as f:
            f.write(inp_text)
        self._ph = ctypes.c_void_p()
        self._check(self._lib.EN_createproject(ctypes.byref(self._ph)), "create project")
        code = self._lib.EN_open(self._ph, inp.encode(), os.path.join(self._dir, "net.rpt").encode(),
                                 os.path.join(self._dir, "net.out").encode())
        if code >= 100:
            detail = self._report_tail()
            self._lib.EN_deleteproject(self._ph)
            self._ph = None
            shutil.rmtree(self._dir, ignore_errors=True)
            raise NetworkInputError(f"EPANET could not read the network (error {code}){detail}")
        self._hyd_open = False
        self._i = ctypes.c_int()
        self._d = ctypes.c_double()
        self._l = ctypes.c_long()

    # -- lifecycle ---------------------------------------------------------------------
    def close(self) -> None:
        if self._ph is not None:
            if self._hyd_open:
                self._lib.EN_closeH(self._ph)
            self._lib.EN_close(self._ph)
            self._lib.EN_deleteproject(self._ph)
            self._ph = None
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> "EpanetProject":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:  # last resort; normal paths call close()
        try:
            self.close()
        except Exception:
            pass

    def _report_tail(self) -> str:
        try:
            with open(os.path.join(self._dir, "net.rpt"), encoding="latin-1") as f:
                lines = [ln.strip() for ln in f if ln.strip()]
            return ": " + " | ".join(lines[-3:]) if lines else ""
        except OSError:
            return ""

    def _check(self, code: int, what: str) -> None:
        if code >= 100:
            raise SimulationError(f"EPANET error {code} in {what}{self._report_tail()}")
        if code > 0:
            self.warnings.add(code)

    # -- lookups -----------------------------------------------------------------------
    def count(self, what: int) -> int:
        self._check(self._lib.EN_getcount(self._ph, what, ctypes.byref(self._i)), "getcount")
        return self._i.value

    def flow_units(self) -> int:
        self._check(self._lib.EN_getflowunits(self._ph, ctypes.byref(self._i)), "getflowunits")
        return self._i.value

    def node_index(self, node_id: str) -> int:
        code = self._lib.EN_getnodeindex(self._ph, node_id.encode(), ctypes.byref(self._i))
        if code:
            raise NetworkInputError(f"no node {node_id!r} in the network")
        return self._i.value

    def link_index(self, link_id: str) -> int:
        code = self._lib.EN_getlinkindex(self._ph, link_id.encode(), ctypes.byref(self._i))
        if code:
            raise NetworkInputError(f"no link {link_id!r} in the network")
        return self._i.value

    # -- values ------------------------------------------------------------------------
    def node(self, index: int, prop: int) -> float:
        self._lib.EN_getnodevalue(self._ph, index, prop, ctypes.byref(self._d))
        return self._d.value

    def link(self, index: int, prop: int) -> float:
        self._lib.EN_getlinkvalue(self._ph, index, prop, ctypes.byref(self._d))
        return self._d.value

    def set_node(self, index: int, prop: int, value: float) -> None:
        self._check(self._lib.EN_setnodevalue(self._ph, index, prop, float(value)),
                    f"set node {index} property {prop} to {value}")

    def set_link(self, index: int, prop: int, value: float) -> None:
        self._check(self._lib.EN_setlinkvalue(self._ph, index, prop, float(value)),
                    f"set link {index} property {prop} to {value}")

    def time(self, param: int) -> int:
        self._check(self._lib.EN_gettimeparam(self._ph, param, ctypes.byref(self._l)), "gettime")
        return self._l.value

    def set_time(self, param: int, value: int) -> None:
        self._check(self._lib.EN_settimeparam(self._ph, param, int(value)), f"settime {param}")

    def option(self, opt: int) -> float:
        self._check(self._lib.EN_getoption(self._ph, opt, ctypes.byref(self._d)), "getoption")
        return self._d.value

    def set_option(self, opt: int, value: float) -> None:
        self._check(self._lib.EN_setoption(self._ph, opt, float(value)), "setoption")

    def demands(self, node: int) -> list[float]:
        n = ctypes.c_int()
        self._check(self._lib.EN_getnumdemands(self._ph, node, ctypes.byref(n)), "getnumdemands")
        out = []
        for k in range(1, n.value + 1):
            self._check(self._lib.EN_getbasedemand(self._ph, node, k, ctypes.byref(self._d)), "dem")
            out.append(self._d.value)
        return out

    def set_demand(self, node: int, category: int, value: float) -> None:
        self._check(self._lib.EN_setbasedemand(self._ph, node, category, float(value)), "setdem")

    # -- controls and rules ------------------------------------------------------------
    def control(self, index: int) -> tuple[int, int, float, int, float]:
        """(type, link index, setting, node index, level) of simple control ``index``;
        type 0/1 = node below/above level, 2 = after a time, 3 = at a clock time."""
        t, ln, nd = ctypes.c_int(), ctypes.c_int(), ctypes.c_int()
        s, lv = ctypes.c_double(), ctypes.c_double()
        self._check(self._lib.EN_getcontrol(self._ph, index, ctypes.byref(t), ctypes.byref(ln),
                                            ctypes.byref(s), ctypes.byref(nd), ctypes.byref(lv)),
                    "getcontrol")
        return t.value, ln.value, s.value, nd.value, lv.value

    def set_control(self, index: int, kind: int, link: int, setting: float, node: int,
                    level: float) -> None:
        self._check(self._lib.EN_setcontrol(self._ph, index, kind, link, float(setting), node,
                                            float(level)), "setcontrol")

    def control_link(self, index: int) -> int:
        return self.control(index)[1]

    def delete_control(self, index: int) -> None:
        self._check(self._lib.EN_deletecontrol(self._ph, index), "deletecontrol")

    def rule_links(self, index: int) -> list[int]:
        npre, nthen, nelse, prio = ctypes.c_int(), ctypes.c_int(), ctypes.c_int(), ctypes.c_double()
        self._check(self._lib.EN_getrule(self._ph, index, ctypes.byref(npre), ctypes.byref(nthen),
                                         ctypes.byref(nelse), ctypes.byref(prio)), "getrule")
        links = []
        st, se = ctypes.c_int(), ctypes.c_double()
        for fn, n in ((self._lib.EN_getthenaction, nthen.value),
                      (self._lib.EN_getelseaction, nelse.value)):
            for a in range(1, n + 1):
                self._check(fn(self._ph, index, a, ctypes.byref(self._i), ctypes.byref(st),
                               ctypes.byref(se)), "getaction")
                links.append(self._i.value)
        return links

    def delete_rule(self, index: int) -> None:
        self._check(self._lib.EN_deleterule(self._ph, index), "deleterule")

    # -- hydraulics --------------------------------------------------------------------
    def open_hydraulics(self) -> None:
        if not self._hyd_open:
            self._check(self._lib.EN_openH(self._ph), "openH")
            self._hyd_open = True

    def init_hydraulics(self) -> None:
        self.open_hydraulics()
        self._check(self._lib.EN_initH(self._ph, INIT_FLOWS), "initH")

    def run_step(self) -> int:
        """Solve hydraulics at the current time; returns that time in seconds."""
        code = self._lib.EN_runH(self._ph, ctypes.byref(self._l))
        self._check(code, f"hydraulics at t={self._l.value}s")
        return self._l.value

    def next_step(self) -> int:
        """Advance to the next hydraulic event; returns the step length (0 at the end)."""
        self._check(self._lib.EN_nextH(self._ph, ctypes.byref(self._l)), "nextH")
        return self._l.value
