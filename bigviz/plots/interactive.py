"""An interactive timeline as one self-contained HTML fragment: zoom, pan and a hover readout.

A 1 ms timeline of a minutes-long load has too many samples for a static figure: the
fragment carries the samples (all of them up to ``max_points``, above that the minimum
and maximum of every bucket of every series, so no peak is lost) and ~200 lines of plain
JavaScript that draw them on a ``<canvas>``:

* mouse wheel (or ``+``/``-``): zoom the time axis around the pointer; drag (or the arrow
  keys): pan; double-click (or ``0``): back to the whole recording;
* hover: a readout of the nearest sample's time, the innermost phase, RSS, anonymous,
  file-backed and shared memory and VRAM (exact bytes in ``data-bytes``);
* phase bands under the curves and one lane per nesting depth above them.

No CDN, no request, no dependency: the view needs nothing but the browser. Colours come
from CSS variables (JupyterLab's ``--jp-*``, the report's ``--ink``/``--line``…) with
light fallbacks, so JupyterLab's dark theme works. Every string from the recording
(phase names!) travels as JSON escaped for HTML and is shown with ``textContent`` or drawn
on the canvas, never parsed as HTML. Several views on one page do not clash: each has its
own id and the script only touches views it has not started yet. Without JavaScript (an
untrusted notebook, a Content-Security-Policy) the view stays hidden and ``fallback``
(e.g. the static PNG or SVG) shows instead.

numpy only: no matplotlib, no IPython. :class:`InteractiveTimeline` displays itself in
Jupyter through ``_repr_html_``.

Example:
    >>> from bigviz.data.recording import Phase, Recording, Series
    >>> rec = Recording(series={"ram.rss": Series("ram.rss", [0.0, 0.001], [10, 20])},
    ...                 phases=[Phase("load", 0.0, 0.001)])
    >>> '<canvas' in timeline_html(rec, uid="a")
    True
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import math
import re
import uuid
from typing import Any

import numpy as np

from bigviz._errors import ConfigError
from bigviz.data.recording import Recording, Series
from bigviz.data.result import RunResult
from bigviz.plots.sampling import as_recording, keep_indices, phase_end, rec_end

__all__ = [
    "MAX_EXACT",
    "SCRIPT",
    "SCRIPT_HASH",
    "InteractiveTimeline",
    "can_show",
    "timeline_data",
    "timeline_html",
]

#: Samples kept exactly (every series at every kept time); above this, min/max per bucket.
MAX_EXACT = 200_000

_UID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_VRAM = re.compile(r"^(cuda:\d+)\.allocated$")

# (series key in the recording, key in the view, label, drawn as)
_RAM = [("ram.anon", "anon", "anonymous", "area"), ("ram.file", "file", "file-backed", "area"),
        ("ram.shmem", "shmem", "shared", "area"), ("ram.rss", "rss", "RSS", "line")]

SCRIPT = r"""(function(){"use strict";
var U=["B","KiB","MiB","GiB","TiB","PiB"],LANE=14,MAXL=4,H=320,L=70,R=14,B=24;
function css(el,names,fb){var cs=getComputedStyle(el);for(var i=0;i<names.length;i++){
var v=cs.getPropertyValue(names[i]).trim();if(v)return v;}return fb;}
function size(n){var s=n<0?"-":"",v=Math.abs(n),i=0;while(v>=1024&&i<U.length-1){v/=1024;i++;}
return i===0?s+Math.floor(v)+" B":s+v.toFixed(1)+" "+U[i];}
function decode(d,q){var o=new Float64Array(d.length),a=0;for(var i=0;i<d.length;i++){a+=d[i];o[i]=a*q;}return o;}
function lower(t,x){var lo=0,hi=t.length;while(lo<hi){var m=(lo+hi)>>1;if(t[m]<x)lo=m+1;else hi=m;}return lo;}
function step(span,n){var r=span/Math.max(1,n),p=Math.pow(10,Math.floor(Math.log(r)/Math.LN10)),f=r/p;
return (f<1.5?1:f<3.5?2:f<7.5?5:10)*p;}
function el(tag,cls,text){var e=document.createElement(tag);if(cls)e.className=cls;if(text!=null)e.textContent=text;return e;}
function init(root){
if(root.getAttribute("data-ready"))return;root.setAttribute("data-ready","1");
var D=JSON.parse(root.getAttribute("data-bigviz")),t=decode(D.t,1e-6),n=t.length,i,k;
var S=D.series.map(function(s){return {key:s.key,label:s.label,kind:s.kind,v:decode(s.d,s.q)};});
var areas=S.filter(function(s){return s.kind==="area";}),lines=S.filter(function(s){return s.kind!=="area";});
var tops=[],acc=new Float64Array(n);for(k=0;k<areas.length;k++){var a=new Float64Array(n);
for(i=0;i<n;i++){acc[i]+=areas[k].v[i];a[i]=acc[i];}tops.push(a);}
var P=D.phases,depth=0;for(k=0;k<P.length;k++)depth=Math.max(depth,P[k][3]);
var lanes=P.length?Math.min(depth+1,MAXL):0,T=lanes*LANE+8;
var full=[D.start,D.end>D.start?D.end:D.start+1e-3],minSpan=Math.max(1e-6,4*(t[n-1]-t[0])/Math.max(1,n-1));
var view=[full[0],full[1]],plot=root.querySelector(".bigviz-itl-plot"),base=plot.children[0],over=plot.children[1];
var out=root.querySelector(".bigviz-itl-readout"),legend=root.querySelector(".bigviz-itl-legend");
var W=0,x0=L,pw=1,ymax=1,col={},drag=null,last=null;
function colors(){var f=css(root,["--bigviz-fg","--jp-ui-font-color1","--ink"],"#1f2933");
col={fg:f,muted:css(root,["--jp-ui-font-color2","--muted"],"#5f6b7a"),
grid:css(root,["--jp-border-color2","--line"],"#d9dee5"),
anon:css(root,["--bigviz-anon"],"#3b75af"),file:css(root,["--bigviz-file"],"#9ecae9"),
shmem:css(root,["--bigviz-shmem"],"#d9c3e6"),rss:f,vram:css(root,["--bigviz-vram"],"#e67e22"),
base:css(root,["--bigviz-baseline"],"#7f8c8d"),band:["rgba(110,140,190,.13)","rgba(200,140,85,.13)"],
lane:["rgba(110,140,190,.45)","rgba(200,140,85,.45)","rgba(106,165,106,.45)","rgba(182,117,168,.45)"]};
col.vrams=[col.vram,"#8e44ad","#16a085","#c0392b"];}
function color(s,j){return s.key==="rss"?col.rss:s.key.indexOf("cuda")===0?col.vrams[j%4]:col[s.key]||col.fg;}
function X(v){return x0+(v-view[0])/(view[1]-view[0])*pw;}
function Y(v){return H-B-v/ymax*(H-B-T);}
function cols(v,i0,i1){var xs=[],mn=[],mx=[],key=null,m=-1;
for(var j=i0;j<=i1;j++){var x=X(t[j]),kk=Math.floor(x),y=v[j];
if(kk!==key){key=kk;m++;xs[m]=x;mn[m]=mx[m]=y;}else{xs[m]=kk+.5;if(y<mn[m])mn[m]=y;if(y>mx[m])mx[m]=y;}}
return {x:xs,mn:mn,mx:mx};}
function area(c,v,i0,i1){var o=cols(v,i0,i1);c.beginPath();c.moveTo(X(t[i0]),Y(0));
for(var m=0;m<o.x.length;m++)c.lineTo(o.x[m],Y(o.mx[m]));c.lineTo(X(t[i1]),Y(0));c.closePath();c.fill();}
function line(c,v,i0,i1){var o=cols(v,i0,i1),m,thick=false;c.beginPath();
for(m=0;m<o.x.length;m++){c.lineTo(o.x[m],Y(o.mx[m]));if(o.mn[m]<o.mx[m])thick=true;}c.stroke();
if(!thick)return;c.beginPath();for(m=0;m<o.x.length;m++)c.lineTo(o.x[m],Y(o.mx[m]));
for(m=o.x.length-1;m>=0;m--)c.lineTo(o.x[m],Y(o.mn[m]));c.closePath();c.globalAlpha=.3;c.fillStyle=c.strokeStyle;c.fill();c.globalAlpha=1;}
function range(){var i0=Math.max(0,lower(t,view[0])-1),i1=Math.min(n-1,lower(t,view[1]));return [i0,i1];}
function draw(){W=plot.clientWidth||800;pw=Math.max(10,W-L-R);colors();var dpr=window.devicePixelRatio||1;
[base,over].forEach(function(c){c.width=Math.round(W*dpr);c.height=Math.round(H*dpr);c.style.width=W+"px";c.style.height=H+"px";});
var c=base.getContext("2d");c.setTransform(dpr,0,0,dpr,0,0);c.clearRect(0,0,W,H);
var r=range(),i0=r[0],i1=r[1],j;ymax=1;
S.forEach(function(s){if(s.kind!=="area")for(j=i0;j<=i1;j++)if(s.v[j]>ymax)ymax=s.v[j];});
if(tops.length)for(j=i0;j<=i1;j++)if(tops[tops.length-1][j]>ymax)ymax=tops[tops.length-1][j];
if(D.baseline!=null&&D.baseline>ymax)ymax=D.baseline;
var u=Math.pow(1024,Math.max(0,Math.floor(Math.log(ymax)/Math.log(1024)))),ys=step(ymax/u,4)*u;ymax=Math.ceil(ymax*1.04/ys)*ys;
c.font="11px system-ui,sans-serif";c.textBaseline="middle";
for(k=0;k<P.length;k++){var p=P[k],a=X(p[1]),b=X(p[2]);if(b<x0||a>x0+pw)continue;
a=Math.max(a,x0);b=Math.min(b,x0+pw);
if(p[3]===0){c.fillStyle=col.band[k%2];c.fillRect(a,T,Math.max(b-a,.5),H-B-T);}
if(p[3]<MAXL){var ly=p[3]*LANE+2;c.fillStyle=col.lane[p[3]%4];c.globalAlpha=k%2?.65:1;c.fillRect(a,ly,Math.max(b-a,.5),LANE-2);c.globalAlpha=1;
if(b-a>24){c.save();c.beginPath();c.rect(a,ly,b-a,LANE);c.clip();c.fillStyle=col.fg;c.fillText(p[0],a+3,ly+LANE/2);c.restore();}}}
c.strokeStyle=col.grid;c.fillStyle=col.muted;c.lineWidth=1;c.textAlign="right";
for(var yv=0;yv<=ymax+1e-9;yv+=ys){var yy=Math.round(Y(yv))+.5;c.beginPath();c.moveTo(x0,yy);c.lineTo(x0+pw,yy);c.stroke();c.fillText(size(yv),x0-6,yy);}
var span=view[1]-view[0],xs=step(span,pw/90),dec=Math.max(0,-Math.floor(Math.log(xs)/Math.LN10+1e-9));c.textAlign="center";c.textBaseline="top";
for(var xv=Math.ceil(view[0]/xs)*xs;xv<=view[1]+1e-12;xv+=xs){var xx=Math.round(X(xv))+.5;
c.beginPath();c.moveTo(xx,H-B);c.lineTo(xx,H-B+4);c.stroke();c.fillText(xv.toFixed(dec)+" s",xx,H-B+6);}
c.save();c.beginPath();c.rect(x0,T,pw,H-B-T);c.clip();
c.globalAlpha=.85;for(k=tops.length-1;k>=0;k--){c.fillStyle=color(areas[k],0);area(c,tops[k],i0,i1);}
c.globalAlpha=1;var nv=0;lines.forEach(function(s){c.strokeStyle=color(s,s.key==="rss"?0:nv++);c.lineWidth=1.3;line(c,s.v,i0,i1);});
if(D.baseline!=null){c.setLineDash([4,3]);c.strokeStyle=col.base;c.beginPath();c.moveTo(x0,Y(D.baseline));c.lineTo(x0+pw,Y(D.baseline));c.stroke();c.setLineDash([]);}
c.restore();c.strokeStyle=col.muted;c.strokeRect(x0+.5,T+.5,pw-1,H-B-T-1);
root.setAttribute("data-start",view[0]);root.setAttribute("data-end",view[1]);
root.setAttribute("data-plot-left",x0);root.setAttribute("data-plot-width",pw);
if(last!==null)hover(last);}
function phaseAt(tt){var best=null;for(var k=0;k<P.length;k++){var p=P[k];
if(p[1]<=tt&&tt<=p[2]&&(best===null||p[3]>best[3]||(p[3]===best[3]&&p[1]>=best[1])))best=p;}return best;}
function hover(px){last=px;var c=over.getContext("2d"),dpr=window.devicePixelRatio||1;c.setTransform(dpr,0,0,dpr,0,0);c.clearRect(0,0,W,H);
var tt=view[0]+(px-x0)/pw*(view[1]-view[0]),j=lower(t,tt);if(j>=n)j=n-1;if(j>0&&tt-t[j-1]<t[j]-tt)j--;
var x=X(t[j]);c.strokeStyle=col.muted;c.beginPath();c.moveTo(x+.5,T);c.lineTo(x+.5,H-B);c.stroke();
var ph=phaseAt(t[j]);out.textContent="";
var ts=el("span","bigviz-itl-t","t "+t[j].toFixed(4)+" s");ts.setAttribute("data-t",String(t[j]));out.appendChild(ts);
out.appendChild(document.createTextNode(" · phase: "));out.appendChild(el("b","bigviz-itl-phase",ph?ph[0]:"—"));
var nv=0;S.forEach(function(s){out.appendChild(document.createTextNode(" · "));var v=s.v[j],sp=el("span",null,s.label+" "+size(v));
sp.setAttribute("data-key",s.key);sp.setAttribute("data-bytes",String(Math.round(v)));sp.title=Math.round(v)+" bytes";
var cc=color(s,s.key.indexOf("cuda")===0?nv++:0);sp.style.borderBottom="2px solid "+cc;out.appendChild(sp);});
var tv=tops.length?tops[tops.length-1][j]:null;S.forEach(function(s){if(s.kind!=="area"){c.fillStyle=col.fg;c.beginPath();c.arc(x,Y(s.v[j]),2.5,0,7);c.fill();}});
if(tv!==null){c.fillStyle=col.fg;c.beginPath();c.arc(x,Y(tv),2,0,7);c.fill();}}
function setView(a,b){var s=Math.min(Math.max(b-a,minSpan),full[1]-full[0]);if(a<full[0])a=full[0];if(a+s>full[1])a=full[1]-s;view=[a,a+s];draw();}
function zoom(f,px){var c=view[0]+(px-x0)/pw*(view[1]-view[0]),s=(view[1]-view[0])*f;setView(c-(c-view[0])*f,c-(c-view[0])*f+s);}
function pos(e){var r=over.getBoundingClientRect();return e.clientX-r.left;}
over.addEventListener("wheel",function(e){e.preventDefault();zoom(Math.exp(Math.max(-300,Math.min(300,e.deltaY))*.002),pos(e));},{passive:false});
over.addEventListener("mousedown",function(e){drag={x:e.clientX,v:view.slice()};e.preventDefault();});
window.addEventListener("mousemove",function(e){if(!drag)return;var d=(e.clientX-drag.x)/pw*(drag.v[1]-drag.v[0]);setView(drag.v[0]-d,drag.v[1]-d);});
window.addEventListener("mouseup",function(){drag=null;});
over.addEventListener("mousemove",function(e){if(!drag)hover(pos(e));});
over.addEventListener("mouseleave",function(){last=null;over.getContext("2d").clearRect(0,0,over.width,over.height);});
over.addEventListener("dblclick",function(){setView(full[0],full[1]);});
over.addEventListener("keydown",function(e){var s=view[1]-view[0],m=x0+pw/2;
if(e.key==="+"||e.key==="=")zoom(.7,m);else if(e.key==="-")zoom(1/.7,m);else if(e.key==="0")setView(full[0],full[1]);
else if(e.key==="ArrowLeft")setView(view[0]-s*.2,view[1]-s*.2);else if(e.key==="ArrowRight")setView(view[0]+s*.2,view[1]+s*.2);else return;e.preventDefault();});
colors();var nv0=0;S.forEach(function(s){var sw=el("span",null,"\u25a0 ");sw.style.color=color(s,s.key.indexOf("cuda")===0?nv0++:0);
legend.appendChild(sw);legend.appendChild(document.createTextNode(s.label+"   "));});
root.hidden=false;draw();var box=root.parentNode,fb=box&&box.querySelector(".bigviz-itl-fallback");if(fb)fb.style.display="none";
if(window.ResizeObserver){var lw=W;new ResizeObserver(function(){if(plot.clientWidth&&plot.clientWidth!==lw){lw=plot.clientWidth;draw();}}).observe(plot);}
else window.addEventListener("resize",draw);}
function start(scope){var v=scope.querySelectorAll("div.bigviz-itl:not([data-ready])");
for(var i=0;i<v.length;i++){try{init(v[i]);}catch(err){v[i].hidden=true;if(window.console)console.warn("bigviz timeline:",err);}}}
var me=document.currentScript;if(me&&me.parentNode)start(me.parentNode);start(document);})();"""  # noqa: E501 (minified: one line per step)

#: ``'sha256-…'`` of :data:`SCRIPT`, for a Content-Security-Policy's ``script-src``.
SCRIPT_HASH = base64.b64encode(hashlib.sha256(SCRIPT.encode()).digest()).decode()


def can_show(obj: Recording | RunResult) -> bool:
    """Whether ``obj`` has RSS samples to show (a distributed recording's lanes: not yet).

    Example:
        >>> can_show(Recording())
        False
    """
    rec, _run = as_recording(obj)
    rss = rec.series.get("ram.rss")
    return rss is not None and len(rss.t) > 0 and not rec.ranks


def _on_clock(s: Series, t: np.ndarray) -> np.ndarray:
    """``s``'s values at the times ``t``: its own when on that clock, else the last sample
    at or before each time (0 before its first)."""
    v = np.asarray(s.v, dtype=np.int64)
    if len(s.t) == len(t) and np.array_equal(np.asarray(s.t, dtype=float), t):
        return v
    idx = np.searchsorted(np.asarray(s.t, dtype=float), t, side="right") - 1
    return np.where(idx >= 0, v[np.clip(idx, 0, len(v) - 1)], 0)


def _deltas(v: np.ndarray) -> tuple[list[int], int]:
    """Delta-encoded ``v`` and its quantum (4 KiB pages when every value is one)."""
    q = next((q for q in (4096, 1024) if len(v) and not np.any(v % q)), 1)
    w = v // q
    return np.diff(w, prepend=0).astype(np.int64).tolist(), q


def timeline_data(obj: Recording | RunResult, *, max_points: int = MAX_EXACT) -> dict[str, Any]:
    """The view's data: times, series and phases of ``obj``, compact, as plain JSON.

    Every sample is kept when there are at most ``max_points``; above that, the kept
    times are the union of each series' minimum and maximum per bucket, so every series
    keeps its peak, and every value shown is a real sample. Times are microseconds and
    values bytes, both delta-encoded (values in 4 KiB pages when all are whole pages).

    Args:
        obj: a Recording or a RunResult (its recording; its baseline is drawn too).
        max_points: the most sample times to keep (at least 100).

    Returns:
        A dict for :func:`timeline_html` (``exact`` says whether every sample is there).

    Raises:
        ConfigError: for a bad ``max_points``, or a recording with no RSS samples.

    Example:
        >>> from bigviz.data.recording import Recording, Series
        >>> rec = Recording(series={"ram.rss": Series("ram.rss", [0.0, 0.001], [4096, 8192])})
        >>> timeline_data(rec)["series"][0]["d"]
        [1, 1]
    """
    if not isinstance(max_points, int) or isinstance(max_points, bool) or max_points < 100:
        raise ConfigError(f"max_points={max_points!r} is too small; use an int >= 100")
    rec, run = as_recording(obj)
    rss = rec.series.get("ram.rss")
    if rss is None or not rss.t:
        raise ConfigError(
            f"recording {rec.name or '(unnamed)'!r} has no RSS samples to show; "
            "record with sources including 'ram'"
        )
    t = np.asarray(rss.t, dtype=float)
    shown: list[tuple[str, str, str, np.ndarray]] = []
    for name, key, label, kind in _RAM:
        s = rec.series.get(name)
        if s is None or not s.v or (key == "shmem" and not any(s.v)):
            continue
        shown.append((key, label, kind, _on_clock(s, t)))
    if not any(k == "anon" for k, *_ in shown) or not any(k == "file" for k, *_ in shown):
        shown = [x for x in shown if x[2] == "line"]  # no stack without both layers
    for name in sorted(rec.series):
        m = _VRAM.match(name)
        if m and rec.series[name].v:
            shown.append((m.group(1), f"VRAM {m.group(1)}", "line", _on_clock(rec.series[name], t)))
    n = len(t)
    idx = np.arange(n)
    if n > max_points:
        per = max(4, max_points // len(shown))
        idx = np.unique(np.concatenate([keep_indices(v.astype(float), per) for *_, v in shown]))
        if len(idx) > max_points:  # the union can exceed the bound a little: thin evenly
            keep = np.unique(np.concatenate([keep_indices(v[idx].astype(float), per // 2)
                                             for *_, v in shown]))
            idx = idx[keep]
    us = np.rint(t[idx] * 1e6).astype(np.int64)
    series = []
    for key, label, kind, v in shown:
        d, q = _deltas(v[idx])
        series.append({"key": key, "label": label, "kind": kind, "q": q, "d": d})
    end = rec_end(rec)
    phases = [
        [p.name, round(p.start, 6), round(phase_end(p, rec), 6), min(p.depth, 99)]
        for p in rec.phases
        if math.isfinite(p.start)
    ]
    starts = [0.0, float(t[0])] + [p.start for p in rec.phases if math.isfinite(p.start)]
    return {
        "title": (run.label if run is not None else rec.name) or "recording",
        "samples": n,
        "exact": bool(len(idx) == n),
        "start": round(min(starts), 6),
        "end": round(max(end, float(t[-1])), 6),
        "t": np.diff(us, prepend=0).tolist(),
        "series": series,
        "phases": phases,
        "baseline": run.baseline if run is not None and run.baseline else None,
    }


def _json_attr(data: dict[str, Any]) -> str:
    """``data`` as JSON that is safe inside HTML anywhere, then escaped for an attribute."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    for ch, esc in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
                    ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(ch, esc)
    return html.escape(text, quote=True)


def timeline_html(
    obj: Recording | RunResult,
    *,
    max_points: int = MAX_EXACT,
    uid: str | None = None,
    fallback: str = "",
    script: bool = True,
) -> str:
    """The interactive timeline of ``obj`` as one HTML fragment.

    Args:
        obj: a Recording or a RunResult.
        max_points: the most sample times to embed (see :func:`timeline_data`).
        uid: the view's id suffix (letters, digits, ``-``, ``_``); random when ``None``.
        fallback: trusted HTML shown when the script does not run (the static figure);
            hidden once the view is drawn.
        script: include the ``<script>``; a page with several views may leave it out and
            add :data:`SCRIPT` once (a CSP can allow it by :data:`SCRIPT_HASH`).

    Returns:
        ``<div class="bigviz-itl-box">…</div>`` (with the script after it when asked).

    Raises:
        ConfigError: for a bad ``uid`` or ``max_points``, or no RSS samples.

    Example:
        >>> from bigviz.data.recording import Recording, Series
        >>> rec = Recording(series={"ram.rss": Series("ram.rss", [0.0], [1])})
        >>> 'id="bigviz-itl-x"' in timeline_html(rec, uid="x", script=False)
        True
    """
    if uid is None:
        uid = uuid.uuid4().hex[:12]
    if not isinstance(uid, str) or not _UID.match(uid):
        raise ConfigError(f"uid={uid!r} is not a usable id; use letters, digits, '-' or '_'")
    data = timeline_data(obj, max_points=max_points)
    how = "every sample" if data["exact"] else f"min/max of {data['samples']:,} samples"
    label = html.escape(f"Interactive timeline of {data['title']}", quote=True)
    font = "font:12px/1.5 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif"
    view = (
        f'<div class="bigviz-itl" id="bigviz-itl-{uid}" hidden data-bigviz="{_json_attr(data)}" '
        f'style="{font};color:var(--jp-ui-font-color1,var(--ink,#1f2933));margin:6px 0">'
        '<div class="bigviz-itl-legend" '
        'style="color:var(--jp-ui-font-color2,var(--muted,#5f6b7a))"></div>'
        '<div class="bigviz-itl-plot" style="position:relative;width:100%;height:320px">'
        '<canvas style="position:absolute;left:0;top:0"></canvas>'
        f'<canvas tabindex="0" role="img" aria-label="{label}" '
        'style="position:absolute;left:0;top:0;cursor:crosshair;outline:none"></canvas></div>'
        '<div class="bigviz-itl-readout" aria-live="polite" style="min-height:3em">'
        "Hover for values · wheel or +/−: zoom · drag or ←/→: pan · double-click or 0: reset"
        "</div>"
        f'<div class="bigviz-itl-note" style="color:var(--jp-ui-font-color2,var(--muted,#5f6b7a));'
        f'font-size:11px">{html.escape(how)}, phases as bands; values are absolute bytes</div>'
        "</div>"
    )
    box = f'<div class="bigviz-itl-box">{view}<div class="bigviz-itl-fallback">{fallback}</div>'
    return box + (f"<script>{SCRIPT}</script>" if script else "") + "</div>"


class InteractiveTimeline:
    """An interactive timeline that Jupyter displays (``_repr_html_``); ``html`` is the
    fragment, for a page of your own.

    Example:
        >>> from bigviz.data.recording import Recording, Series
        >>> rec = Recording(series={"ram.rss": Series("ram.rss", [0.0], [1])})
        >>> InteractiveTimeline(rec)._repr_html_().startswith('<div class="bigviz-itl-box">')
        True
    """

    def __init__(self, obj: Recording | RunResult, *, max_points: int = MAX_EXACT,
                 fallback: str = "") -> None:
        self.html = timeline_html(obj, max_points=max_points, fallback=fallback)

    def _repr_html_(self) -> str:
        return self.html
