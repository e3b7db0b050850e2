#!/usr/bin/env python3
"""Writes tests/hostile/corpus.jsonl, the hostile-input corpus of
tests/hostile.rs (issue #6 item 4). The .jsonl file is what the test reads;
this script only documents how it was made (edit either, keep both in step).

One case per line:
  topic        topic suffix after "{prefix}/v1/"
  payload      the payload as text, or
  payload_b64  the payload bytes (invalid UTF-8, binary), or
  generate     a payload the test builds (too big to keep in a file):
               "pad:N" (N bytes of valid JSON: a dose with an unknown field
               padded to N bytes), "spaces:N", "nest:N" (a dose with an
               unknown field nested N arrays deep), "bytes:N" (N 0xff bytes)
  expect       "ok" (accepted and applied), "redelivery" (the same content
               again: acknowledged, stored once, not an error), or the
               contract's rejection code
  field        the rejection's field (null when it has none)
  broker       false when Mosquitto cannot carry it to the daemon (a topic
               with a wildcard, a control character, or outside the
               daemon's subscriptions: patients/+/+, devices/+/+,
               alerts/+/+, less its own outputs): checked by the pure test
               only
  note         what the case is
Times: {{now}}, {{now-90m}}, {{now+1h}}, {{now-31d}} (s, m, h, d) are
rendered against the clock of the run (the pure test: 2026-11-27T10:00:00Z).
"""
import base64, json, os

cases = []

def case(topic, payload=None, expect="ok", field=None, note="", b64=None, gen=None, broker=True):
    c = {"topic": topic}
    if b64 is not None:
        c["payload_b64"] = base64.b64encode(b64).decode()
    elif gen is not None:
        c["generate"] = gen
    else:
        c["payload"] = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
    c["expect"] = expect
    c["field"] = field
    if not broker:
        c["broker"] = False
    c["note"] = note
    cases.append(c)

def bad(topic, payload, code, field, note, **kw):
    case(topic, payload, code, field, note, **kw)

D1 = "patients/P-H1/doses"
D2 = "patients/P-H2/doses"
PUMP = "devices/pump-h1/events"
PUMP2 = "devices/pump-h2/events"
PATCH = "devices/patch-h1/events"
CMD = "alerts/alert-h1/commands"
n = [0]
def nid(p="x"):
    n[0] += 1
    return f"{p}-{n[0]}"

def dose(**kw):
    d = {"id": nid("bad"), "time": "{{now-20m}}", "route": "iv_bolus", "amount_mg": 5}
    d.update(kw)
    return {k: v for k, v in d.items() if v is not DROP}

def ev(**kw):
    d = {"id": nid("bad"), "time": "{{now-20m}}", "kind": "heartbeat"}
    d.update(kw)
    return {k: v for k, v in d.items() if v is not DROP}

def cmd(**kw):
    d = {"id": nid("bad"), "time": "{{now-1m}}", "action": "acknowledge", "by": "rn-1"}
    d.update(kw)
    return {k: v for k, v in d.items() if v is not DROP}

DROP = object()

# --- valid traffic, part 1: admissions and the first deliveries ---------------
case("patients/P-H1/admit", {"id": "adm-h1", "time": "{{now-3h}}", "weight_kg": 72.5, "age_years": 41, "sex": "female", "comedications": ["midazolam"]}, note="admit P-H1")
case("patients/P-H2/admit", {"id": "adm-h2", "time": "{{now-3h}}", "weight_kg": 90, "age_years": 63, "setting": "monitored"}, note="admit P-H2")
case(D1, {"id": "mar-h1", "time": "{{now-170m}}", "route": "iv_bolus", "amount_mg": 20}, note="IV bolus")
case(PUMP, {"id": "ph-1", "time": "{{now-160m}}", "kind": "infusion_started", "patient_id": "P-H1", "rate_mg_per_h": 12}, note="pump starts for P-H1")
case(PATCH, {"id": "tp-1", "time": "{{now-150m}}", "kind": "patch_applied", "patient_id": "P-H2", "release_rate_mg_per_h": 1.2, "wear_h": 72, "site": "upper arm"}, note="patch on P-H2")

# --- invalid_json -------------------------------------------------------------
J = "invalid_json"
for p, note in [
    ("{not json", "unquoted key"), ("", "empty payload"), (" ", "only a space"), ("\n\t", "only whitespace"),
    ('{"id":"x",}', "trailing comma"), ('{"id":"x"} x', "trailing garbage"), ("{'id':'x'}", "single quotes"),
    ('{"id":"x"', "truncated object"), ('{"id":"x","time":', "truncated after colon"),
    ('{"amount_mg":NaN}', "NaN literal"), ('{"amount_mg":Infinity}', "Infinity literal"),
    ('{"amount_mg":-Infinity}', "-Infinity literal"), ('{"amount_mg":nan}', "nan literal"),
    ('{"amount_mg":0x10}', "hex number"), ('{"amount_mg":01}', "leading zero"), ('{"amount_mg":.5}', "bare fraction"),
    ('{"amount_mg":5.}', "dangling point"), ('{"amount_mg":+5}', "plus sign"),
    ('{"id":"x"} // comment', "line comment"), ('/* c */ {"id":"x"}', "block comment"),
    ("\ufeff{}", "byte order mark"), ('{"id":"\\ud800"}', "lone surrogate escape"),
    ('{"id":"\\x41"}', "bad escape"), ('{"id":"tab\there"}', "raw control character in a string"),
    ('{"id":"a" "time":"b"}', "missing comma"), ('{{}}', "object as key"), ('{"a":[1,2}', "unbalanced brackets"),
    ("undefined", "JavaScript undefined"), ('{"id":True}', "Python True"), ("{}{}", "two objects"),
    ('{"id":"x",\n"time"}', "key without value"),
    ("[" * 200 + "]" * 200, "200-deep arrays (nesting limit 128)"),
    ('{"a":' * 130 + "1" + "}" * 130, "130-deep objects"),
    ('{"id":"x","extra":' + "[" * 129 + "]" * 129 + "}", "129-deep unknown field"),
]:
    bad(D1, p, J, None, note)
for b, note in [
    (b"\xff", "a lone 0xff byte"), (b"\xc3\x28", "invalid 2-byte sequence"), (b'{"id":"\xc0\xaf"}', "overlong encoding"),
    (b'{"id":"\xed\xa0\x80"}', "UTF-8-encoded surrogate"), (b'{"id":"caf\xe9"}', "Latin-1 text"),
    (b'{"id":"x\xe2\x82"}', "truncated multibyte sequence"), ('{"id":"x"}'.encode("utf-16-le"), "UTF-16 LE JSON"),
    (b"\x00\x00\x00\x00", "NUL bytes"), (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "a PNG header"),
    (b"\x1f\x8b\x08\x00\x00\x00\x00\x00", "a gzip header"), (b'{"id":"\xf8\x88\x80\x80\x80"}', "5-byte sequence"),
    (b'\xef\xbb\xbf{"id":"x"}', "UTF-8 BOM bytes"),
]:
    bad(D1, None, J, None, note, b64=b)
bad(PUMP, "{", J, None, "device topic: broken JSON")
bad("patients/P-H1/admit", '{"weight_kg":NaN}', J, None, "admit: NaN")
bad(CMD, "ack", J, None, "command: bare word")

# --- not_an_object --------------------------------------------------------------
for p, note in [("[]", "empty array"), ("[1]", "array"), ("1", "number"), ('"dose"', "string"), ("null", "null"),
                ("true", "true"), ("false", "false"), ("-0", "minus zero"), ("1e5", "exponent number"),
                ('[{"id":"x","time":"{{now-5m}}","route":"oral","amount_mg":5}]', "a dose wrapped in an array"),
                ('"{\\"id\\":\\"x\\"}"', "double-encoded JSON"), ("1e400", "number too large to be finite")]:
    bad(D1, p, "not_an_object", None, note)
bad(PUMP, "[]", "not_an_object", None, "device event as array")
bad("patients/P-H1/admit", "42", "not_an_object", None, "admit as a number")
bad(CMD, "null", "not_an_object", None, "command as null")

# --- missing_field ----------------------------------------------------------------
M = "missing_field"
bad(D1, "{}", M, "id", "empty object")
bad(D1, dose(id=DROP), M, "id", "dose without id")
bad(D1, dose(time=DROP), M, "time", "dose without time")
bad(D1, dose(route=DROP), M, "route", "dose without route")
bad(D1, dose(amount_mg=DROP), M, "amount_mg", "bolus without amount")
bad(D1, dose(route="iv_infusion", amount_mg=DROP, rate_mg_per_h=10), M, "duration_min", "infusion without duration")
bad(D1, dose(route="iv_infusion", amount_mg=DROP, duration_min=60), M, "rate_mg_per_h", "infusion without rate")
bad(D1, dose(route="transdermal", amount_mg=DROP, release_rate_mg_per_h=1), M, "wear_h", "patch dose without wear_h")
bad(D1, {"ID": "x", "Time": "{{now-5m}}", "Route": "oral", "Amount_mg": 5}, M, "id", "keys in the wrong case")
bad(D1, {"id ": "x", "time": "{{now-5m}}"}, M, "id", "key with a trailing space")
bad("patients/P-H1/admit", {"id": nid(), "time": "{{now-1h}}"}, M, "weight_kg", "admit without weight")
bad("patients/P-H1/admit", {"time": "{{now-1h}}", "weight_kg": 70}, M, "id", "admit without id")
bad("patients/P-H1/discharge", {"id": nid()}, M, "time", "discharge without time")
bad(PUMP, ev(kind=DROP), M, "kind", "device event without kind")
bad(PUMP, ev(kind="infusion_started"), M, "rate_mg_per_h", "infusion_started without rate")
bad(PUMP, ev(kind="infusion_rate_changed", rate_ml_per_h=10), M, "concentration_mg_per_ml", "ml/h without concentration")
bad(PUMP, ev(kind="bolus_delivered"), M, "amount_mg", "pump bolus without amount")
bad(PUMP, ev(kind="alarm"), M, "code", "alarm without code")
bad(PUMP, ev(kind="alarm_cleared"), M, "code", "alarm_cleared without code")
bad(PATCH, ev(kind="patch_applied", release_rate_mg_per_h=1), M, "wear_h", "patch without wear_h")
bad(PATCH, ev(kind="patch_applied", wear_h=24), M, "release_rate_mg_per_h", "patch without release rate")
bad(PUMP, ev(id=DROP), M, "id", "device event without id")
bad(CMD, cmd(action=DROP), M, "action", "command without action")
bad(CMD, cmd(action="pause"), M, "minutes", "pause without minutes")
bad(CMD, cmd(by=DROP), M, "by", "command without by")
bad(CMD, cmd(time=DROP), M, "time", "command without time")

# --- valid traffic, part 2 ------------------------------------------------------
case(D2, {"id": "mar-h2", "time": "{{now-140m}}", "route": "intranasal", "amount_mg": 50}, note="intranasal dose")
case(PUMP, {"id": "ph-2", "time": "{{now-130m}}", "kind": "infusion_rate_changed", "rate_ml_per_h": 10, "concentration_mg_per_ml": 1}, note="rate change in mL/h")
case(PUMP, {"id": "ph-3", "time": "{{now-125m}}", "kind": "heartbeat", "delivered_total_mg": 7.5, "firmware": "x" * 5000}, note="heartbeat with a large unknown field")
case(PUMP, {"id": "ph-4", "time": "{{now-120m}}", "kind": "heartbeat", "device_id": "pump-h2"}, note="payload device_id disagrees with the topic: ignored, the topic wins")

# --- invalid_value ---------------------------------------------------------------
V = "invalid_value"
for v, note in [(42, "id a number"), ("", "empty id"), ("x" * 129, "id of 129 characters"), ("a\u0000b", "NUL in id"),
                ("a\u0007b", "BEL in id"), ("a\nb", "newline in id"), ("\u001b[31m", "ANSI escape in id"),
                ("a\u007fb", "DEL in id"), ("a\u0085b", "C1 control in id"), (None, "id null"), (["x"], "id an array")]:
    bad(D1, dose(id=v), V, "id", note)
for v, note in [(1764237600000, "epoch milliseconds"), ("2026-11-27T10:00:00", "no offset"), ("2026-11-27", "date only"),
                ("yesterday", "words"), ("2026-02-30T10:00:00Z", "30 February"), ("2026-11-27T24:00:00Z", "hour 24"),
                ("10000-01-01T00:00:00Z", "year 10000"), ("27/11/2026 10:00", "a local date format"),
                ("", "empty time"), (None, "time null"), ("2026-13-01T00:00:00Z", "month 13"),
                ("1970-01-01T00:00:00Z", "the epoch: ancient"), ("0001-01-01T00:00:00Z", "year 1: ancient"),
                ("1900-01-01T00:00:00+00:00", "1900: ancient"), ("{{now-31d}}", "31 days ago: beyond max_past_age_h"),
                ("{{now-365d}}", "a year ago"), ("1976-11-27T10:00:00Z", "50 years ago")]:
    bad(D1, dose(time=v), V, "time", note)
for v, note in [(-1, "negative dose"), (0, "zero dose"), ("-0", None), (10000.001, "just above 10 g"),
                (1e9, "absurd dose"), (1e308, "near f64 max"), ("1e400", None), ("-1e400", None), ("5", "amount as a string"),
                (None, "amount null"), (True, "amount true"), ([5], "amount in an array"), ({"value": 5}, "amount as an object"),
                ("123456789012345678901234567890", None), (-1e-300, "tiny negative")]:
    if isinstance(v, str) and v in ("-0", "1e400", "-1e400", "123456789012345678901234567890"):
        note = {"-0": "minus zero", "1e400": "overflows f64", "-1e400": "overflows f64 negative", "123456789012345678901234567890": "30-digit integer"}[v]
        body = json.dumps(dose(), separators=(",", ":")).replace('"amount_mg":5', '"amount_mg":' + v)
        bad(D1, body, V, "amount_mg", note)
    else:
        bad(D1, dose(amount_mg=v), V, "amount_mg", note)
for v, note in [("IV", "route in upper case"), ("iv bolus", "route with a space"), ("", "empty route"), (None, "route null"),
                ("intravenous", "unknown route"), (7, "route a number")]:
    bad(D1, dose(route=v), V, "route", note)
bad(D1, dose(route="iv_infusion", amount_mg=DROP, rate_mg_per_h=10001, duration_min=60), V, "rate_mg_per_h", "infusion rate above 10000")
bad(D1, dose(route="iv_infusion", amount_mg=DROP, rate_mg_per_h=-5, duration_min=60), V, "rate_mg_per_h", "negative infusion rate")
bad(D1, dose(route="iv_infusion", amount_mg=DROP, rate_mg_per_h=10, duration_min=0), V, "duration_min", "zero duration")
bad(D1, dose(route="iv_infusion", amount_mg=DROP, rate_mg_per_h=10, duration_min=43201), V, "duration_min", "duration over 30 days")
bad(D1, dose(route="transdermal", amount_mg=DROP, release_rate_mg_per_h=101, wear_h=24), V, "release_rate_mg_per_h", "absurd patch rate")
bad(D1, dose(route="transdermal", amount_mg=DROP, release_rate_mg_per_h=1, wear_h=337), V, "wear_h", "wear over 14 days")
A = "patients/P-H1/admit"
def adm(**kw):
    d = {"id": nid("adm-bad"), "time": "{{now-1h}}", "weight_kg": 70}
    d.update(kw)
    return {k: v for k, v in d.items() if v is not DROP}
for f, v, note in [("weight_kg", 0, "zero weight"), ("weight_kg", 401, "weight over 400"), ("weight_kg", -72, "negative weight"),
                   ("weight_kg", "72", "weight as a string"), ("weight_kg", 72000, "weight in grams"), ("age_years", 131, "age 131"),
                   ("age_years", -1, "negative age"), ("height_cm", 10, "height 10 cm"), ("height_cm", 1.7, "height in metres"),
                   ("sex", "other", "sex not in the set"), ("sex", "F", "sex abbreviated"), ("setting", "icu", "unknown setting"),
                   ("model", "nope", "unknown model (drug file)"), ("comedications", "midazolam", "comedications not an array"),
                   ("targets", [100], "targets an array")]:
    bad(A, adm(**{f: v}), V, f, note)
bad(A, adm(comedications=["Midazolam"]), V, "comedications[0]", "comedication in upper case")
bad(A, adm(comedications=["midazolam", 5]), V, "comedications[1]", "comedication a number")
bad(A, adm(comedications=["x"] * 65), V, "comedications", "65 comedications")
bad(A, adm(targets={"ceiling_ng_per_ml": -5}), V, "targets.ceiling_ng_per_ml", "negative target")
for kw, f, note in [
    (dict(kind="infusion_started", rate_mg_per_h=10001), "rate_mg_per_h", "pump rate above 10000"),
    (dict(kind="infusion_started", rate_mg_per_h=-1), "rate_mg_per_h", "negative pump rate"),
    (dict(kind="infusion_started", rate_ml_per_h=10, concentration_mg_per_ml=0), "concentration_mg_per_ml", "zero concentration"),
    (dict(kind="infusion_started", rate_mg_per_h=20, rate_ml_per_h=10, concentration_mg_per_ml=1), "rate_mg_per_h", "the two rate forms disagree"),
    (dict(kind="infusion_stopped", reason="bored"), "reason", "unknown stop reason"),
    (dict(kind="bolus_delivered", amount_mg=0), "amount_mg", "zero pump bolus"),
    (dict(kind="bolus_delivered", amount_mg=5, source="robot"), "source", "unknown bolus source"),
    (dict(kind="heartbeat", delivered_total_mg=-1), "delivered_total_mg", "negative totaliser"),
    (dict(kind="heartbeat", delivered_total_mg="lots"), "delivered_total_mg", "totaliser a string"),
    (dict(kind="alarm", code="fire"), "code", "unknown alarm code"),
    (dict(kind="alarm", code="occlusion", message="m" * 1025), "message", "alarm message over 1024 characters"),
    (dict(kind="alarm", code="occlusion", message=7), "message", "alarm message a number"),
    (dict(kind="heartbeat", patient_id="P H1"), "patient_id", "payload patient_id with a space"),
    (dict(kind="heartbeat", patient_id="P-\u0000"), "patient_id", "payload patient_id with NUL"),
    (dict(kind="heartbeat", patient_id="p" * 65), "patient_id", "payload patient_id of 65 characters"),
    (dict(kind="heartbeat", patient_id=""), "patient_id", "empty payload patient_id"),
    (dict(kind=7), "kind", "kind a number"),
    (dict(kind=None), "kind", "kind null"),
]:
    bad(PUMP, ev(**kw), V, f, note)
for kw, f, note in [
    (dict(kind="patch_applied", release_rate_mg_per_h=1, wear_h=0), "wear_h", "zero wear"),
    (dict(kind="patch_applied", release_rate_mg_per_h=1, wear_h=24, site=["arm"]), "site", "site an array"),
    (dict(kind="heartbeat", skin_temp_c=51), "skin_temp_c", "skin at 51 C"),
    (dict(kind="heartbeat", skin_contact="yes"), "skin_contact", "skin_contact a string"),
]:
    bad(PATCH, ev(**kw), V, f, note)
for kw, f, note in [(dict(action="pause", minutes=0), "minutes", "pause of 0 min"), (dict(action="pause", minutes=1441), "minutes", "pause over a day"),
                    (dict(by=""), "by", "empty by"), (dict(by="rn\u0000"), "by", "NUL in by"), (dict(by="b" * 129), "by", "by of 129 characters"),
                    (dict(action=1), "action", "action a number")]:
    bad(CMD, cmd(**kw), V, f, note)

# --- valid traffic, part 3 ------------------------------------------------------
case(D1, {"id": "x" * 128, "time": "{{now-110m}}", "route": "oral", "amount_mg": 25}, note="id of exactly 128 characters")
case(D1, {"id": "mar-h3 (café, ü)", "time": "{{now-100m}}", "route": "sublingual", "amount_mg": 10, "note": "unicode id is printable"}, note="unicode id")
case("patients/" + "P" * 64 + "/admit", {"id": "adm-long", "time": "{{now-2h}}", "weight_kg": 60}, note="patient id of exactly 64 characters")
case(PUMP2, {"id": "p2-1", "time": "{{now-90m}}", "kind": "infusion_started", "patient_id": "P-H2", "rate_mg_per_h": 5}, note="second pump for P-H2")
case(D2, {"id": "mar-h4", "time": "{{now-95m}}", "route": "iv_infusion", "rate_mg_per_h": 20, "duration_min": 30, "deep": [[[[[[[[[[1]]]]]]]]]]}, note="manual infusion with a nested unknown field")

# --- unknown_kind ------------------------------------------------------------------
for k, note in [("teleport", "unknown kind"), ("", "empty kind"), ("INFUSION_STARTED", "kind in upper case"), ("infusion-started", "hyphen for underscore"),
                ("heartbeat ", "trailing space"), ("patch_applied\u0000", "NUL after a kind"), ("infusion_paused", "plausible but unknown kind")]:
    bad(PUMP, ev(kind=k), "unknown_kind", "kind", note)
for a, note in [("snooze", "unknown action"), ("", "empty action"), ("ACKNOWLEDGE", "action in upper case"), ("delete", "destructive action"), ("ack", "abbreviated action")]:
    bad(CMD, cmd(action=a), "unknown_kind", "action", note)

# --- bad_topic ------------------------------------------------------------------------
T = "bad_topic"
good_dose = lambda: dose()
for seg, note in [("P H1", "space"), ("", "empty segment"), ("P" * 65, "65 characters"), ("Pé", "non-ASCII"),
                  ("P@1", "at sign"), ("P$1", "dollar"), ("P%201", "percent-encoded space"), ("P*1", "asterisk"),
                  ("P:1", "colon"), ("P,1", "comma"), ("P;DROP TABLE", "SQL"), ("..%2F", "encoded slash"), ("P\\1", "backslash"),
                  ("\u00a0", "no-break space"), ("P\u200b1", "zero-width space")]:
    bad(f"patients/{seg}/doses", good_dose(), T, "patient_id", f"patient_id: {note}")
for seg, note in [("pump 1", "space"), ("", "empty segment"), ("p" * 65, "65 characters"), ("pümp", "non-ASCII"), ("pump!", "exclamation mark")]:
    bad(f"devices/{seg}/events", ev(), T, "device_id", f"device_id: {note}")
for seg, note in [("a b", "space"), ("", "empty segment"), ("a" * 65, "65 characters")]:
    bad(f"alerts/{seg}/commands", cmd(), T, "alert_id", f"alert_id: {note}")
# Topics Mosquitto will not carry to the daemon: the pure test only.
for topic, field, note in [
    ("patients/+/doses", "patient_id", "wildcard +"), ("patients/#", None, "wildcard #"), ("patients/P-H1/dose", None, "action without s"),
    ("patients/P-H1/state", None, "an output topic"), ("patients/P-H1/alerts/active", None, "an output topic"),
    ("rejected", None, "the rejected topic"), ("status", None, "the status topic"), ("devices/pump-h1/alerts", None, "device alerts output"),
    ("patients/P-H1/doses/", None, "trailing slash"), ("patients/P-H1", None, "too short"), ("nurses/N-1/doses", None, "unknown collection"),
    ("", None, "empty suffix"), ("patients/P\u0000H1/doses", "patient_id", "NUL in a segment"), ("devices/pump\u0007/events", "device_id", "BEL in a segment"),
    ("patients/P+1/doses", "patient_id", "plus inside a segment"), ("patients/P#1/doses", "patient_id", "hash inside a segment"),
    ("Patients/P-H1/doses", None, "collection in upper case"),
]:
    if note == "action without s":
        # Kept in place (the ids after it do not move): an unknown leaf of the
        # input space, which the daemon subscribes to (issue #13 item 11).
        bad(topic, good_dose(), "unknown_topic", field, note)
    else:
        bad(topic, good_dose(), T, field, note, broker=False)

# --- too_large ----------------------------------------------------------------------------
L = "too_large"
bad(D1, None, L, None, "64 KiB + 1 of spaces", gen="spaces:65537")
bad(D1, None, L, None, "a valid dose padded to 64 KiB + 1", gen="pad:65537")
bad(D1, None, L, None, "a valid dose padded to 100 KiB", gen="pad:102400")
bad(D1, None, L, None, "900 KiB (under the broker packet limit)", gen="pad:921600")
bad(D1, None, L, None, "invalid UTF-8 over the limit: size is checked first", gen="bytes:70000")
bad(PUMP, None, L, None, "device topic, over the limit", gen="spaces:65600")
bad("patients/P-H1/admit", None, L, None, "admit, over the limit", gen="pad:80000")
bad(CMD, None, L, None, "command, over the limit", gen="nest:70000")

# --- clock_skew ---------------------------------------------------------------------------
for t, note in [("{{now+6m}}", "6 min ahead"), ("{{now+1h}}", "an hour ahead"), ("{{now+1d}}", "a day ahead"), ("{{now+400d}}", "next year"),
                ("9999-12-31T23:59:59Z", "year 9999"), ("2100-01-01T00:00:00+14:00", "2100")]:
    bad(D1, dose(time=t), "clock_skew", "time", note)
bad(PUMP, ev(time="{{now+2h}}"), "clock_skew", "time", "device event ahead")
bad(CMD, cmd(time="{{now+1h}}"), "clock_skew", "time", "command ahead")
bad("patients/P-H1/admit", adm(time="{{now+1d}}"), "clock_skew", "time", "admit ahead")

# --- unknown_device -------------------------------------------------------------------------
U = "unknown_device"
bad("devices/pump-x9/events", {"id": "ux-1", "time": "{{now-10m}}", "kind": "heartbeat"}, U, "device_id", "a valid event from an unlisted pump")
bad("devices/PUMP-H1/events", {"id": "ux-2", "time": "{{now-10m}}", "kind": "heartbeat"}, U, "device_id", "listed id in another case")
bad("devices/pump-h1./events", {"id": "ux-3", "time": "{{now-10m}}", "kind": "heartbeat"}, U, "device_id", "listed id plus a dot")
bad("devices/pump-h10/events", {"id": "ux-4", "time": "{{now-10m}}", "kind": "infusion_started", "patient_id": "P-H1", "rate_mg_per_h": 500}, U, "device_id", "an unlisted pump starting an infusion")
bad("devices/rogue/events", "{not json", U, "device_id", "an unlisted device's garbage: the list is checked first")
bad("devices/rogue/events", None, U, "device_id", "an unlisted device's over-size payload", gen="spaces:70000")
bad("devices/rogue/events", None, U, "device_id", "an unlisted device's invalid UTF-8", b64=b"\xff\xfe")
bad("devices/patch-h2/events", {"id": "ux-5", "time": "{{now-10m}}", "kind": "patch_applied", "patient_id": "P-H2", "release_rate_mg_per_h": 99, "wear_h": 300}, U, "device_id", "an unlisted patch")

# --- duplicates --------------------------------------------------------------------------------
case(D1, {"id": "mar-dup", "time": "{{now-80m}}", "route": "im", "amount_mg": 30}, note="dose to be duplicated")
case(D1, {"amount_mg": 30, "route": "im", "time": "{{now-80m}}", "id": "mar-dup"}, expect="redelivery", note="same content, keys reordered: a redelivery")
bad(D1, {"id": "mar-dup", "time": "{{now-80m}}", "route": "im", "amount_mg": 300}, "duplicate_conflict", "id", "same id, ten times the amount")
bad(D1, {"id": "mar-dup", "time": "{{now-70m}}", "route": "im", "amount_mg": 30}, "duplicate_conflict", "id", "same id, another time")
case(D1, {"id": "mar-dup", "time": "{{now-80m}}", "route": "im", "amount_mg": 30.0, "extra": 1}, expect="redelivery", note="same id and parsed content, plus an unknown field and 30.0 for 30: a redelivery (the store compares the parsed input)")
bad(D1, {"id": "mar-dup", "time": "{{now-80m}}", "route": "oral", "amount_mg": 30}, "duplicate_conflict", "id", "same id, another route")
bad(D1, {"id": "mar-h1", "time": "{{now-170m}}", "route": "iv_bolus", "amount_mg": 200}, "duplicate_conflict", "id", "the first bolus replayed with 10x the dose")
bad("patients/P-H1/admit", {"id": "adm-h1", "time": "{{now-3h}}", "weight_kg": 7.25, "age_years": 41, "sex": "female", "comedications": ["midazolam"]}, "duplicate_conflict", "id", "admit id reused, weight /10")
bad(PUMP, {"id": "ph-1", "time": "{{now-160m}}", "kind": "infusion_started", "patient_id": "P-H1", "rate_mg_per_h": 120}, "duplicate_conflict", "id", "pump event id reused, rate x10")
bad(PATCH, {"id": "tp-1", "time": "{{now-150m}}", "kind": "patch_removed"}, "duplicate_conflict", "id", "patch event id reused, another kind")
bad("patients/P-H1/discharge", {"id": "mar-h1", "time": "{{now-1m}}"}, "duplicate_conflict", "id", "a dose id reused as a discharge (one source per patient)")

# --- valid traffic, part 4 --------------------------------------------------------------------------
case(PUMP, {"id": "ph-5", "time": "{{now-60m}}", "kind": "bolus_delivered", "amount_mg": 10, "source": "pca"}, note="PCA bolus")
case(PUMP, {"id": "ph-6", "time": "{{now-50m}}", "kind": "alarm", "code": "occlusion", "message": "downstream occlusion\u0007"}, note="alarm (free text may hold a control character)")
case(PUMP, {"id": "ph-7", "time": "{{now-45m}}", "kind": "alarm_cleared", "code": "occlusion"}, note="alarm cleared")
case(PATCH, {"id": "tp-2", "time": "{{now-40m}}", "kind": "heartbeat", "skin_contact": True, "skin_temp_c": 33.5}, note="patch heartbeat")
case(D2, {"id": "mar-h5", "time": "{{now-35m}}", "route": "oral", "amount_mg": 1e-3}, note="a tiny dose")
case(D2, {"id": "mar-h6", "time": "{{now-30m}}", "route": "rectal", "amount_mg": 10000}, note="the largest accepted amount (a dose_limit alert, not a rejection)")
case(D1, {"id": "mar-h7", "time": "{{now-25m}}", "route": "sc", "amount_mg": 5.5}, note="subcutaneous")
case(D1, None, note="a valid dose padded to exactly 64 KiB", gen="pad:65536")
case(D1, None, note="a valid dose with an unknown field 100 arrays deep", gen="nest:100")
case(PUMP, {"id": "ph-8", "time": "{{now-10m}}", "kind": "infusion_stopped", "reason": "completed"}, note="pump stops")
case(PUMP2, {"id": "p2-2", "time": "{{now-5m}}", "kind": "heartbeat", "delivered_total_mg": 7.4}, note="pump 2 heartbeat")
case("patients/P-H3/admit", {"id": "adm-h3", "time": "{{now-20d}}", "weight_kg": 80}, note="admitted 20 days ago: late, within max_past_age_h")
case("patients/P-H3/doses", {"id": "mar-h3-1", "time": "{{now-20d}}", "route": "oral", "amount_mg": 50}, note="a dose 20 days ago")
case("patients/P-H3/discharge", {"id": "dis-h3", "time": "{{now-19d}}"}, note="discharged 19 days ago")
# association_conflict needs the store (the device's association): pump-h1 is P-H1's since now-160m.
bad(PUMP, {"id": "ph-9", "time": "{{now-4m}}", "kind": "heartbeat", "patient_id": "P-H2"}, "association_conflict", "patient_id", "a heartbeat from P-H1's pump naming P-H2: never re-associates")

# --- unknown_topic (issue #13 item 11; appended so earlier ids stay) -----------------------------
K = "unknown_topic"
bad("devices/pump-h1/event", {"id": "uk-1", "time": "{{now-10m}}", "kind": "heartbeat"}, K, None, "device events without s")
bad("alerts/al-h1/ack", {"id": "uk-2", "time": "{{now-1m}}", "action": "acknowledge", "by": "rn-1"}, K, None, "an alert leaf that is not commands")
bad("patients/P-H1/vitals", {"id": "uk-3", "time": "{{now-10m}}"}, K, None, "a patient leaf that is not an input")

# --- who may silence an alert (issue #13 item 13): operators ["rn-1"], commands at most 10 min old --
bad(CMD, {"id": "op-1", "time": "{{now-1m}}", "action": "acknowledge", "by": "rn-9"}, "unknown_operator", "by", "an operator not on [alerts] operators")
bad(CMD, {"id": "op-2", "time": "{{now-29d}}", "action": "acknowledge", "by": "rn-1"}, "stale_command", "time", "a command 29 days old: within max_past_age_h, far beyond max_command_age_min")
bad(CMD, {"id": "op-3", "time": "{{now-11m}}", "action": "pause", "minutes": 30, "by": "rn-1"}, "stale_command", "time", "a pause 11 min old")

here = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(here, "corpus.jsonl"), "w") as f:
    for c in cases:
        f.write(json.dumps(c, ensure_ascii=True, separators=(",", ":")) + "\n")
# Seeds of the fuzz target (fuzz/corpus/intake): each case small enough for
# libFuzzer's default max_len, times rendered at fuzz/check.rs's NOW_MS
# (2026-11-27T10:00:00Z), as "{topic}\n{payload}".
import datetime, re
NOW = datetime.datetime(2026, 11, 27, 10, 0, 0, tzinfo=datetime.timezone.utc)
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
def render(text):
    def one(m):
        spec = m.group(1)
        off = 0 if not spec else (1 if spec[0] == "+" else -1) * int(spec[1:-1]) * UNITS[spec[-1]]
        return (NOW + datetime.timedelta(seconds=off)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return re.sub(r"\{\{now([^}]*)\}\}", one, text)
seeds = os.path.join(here, "..", "..", "fuzz", "corpus", "intake")
os.makedirs(seeds, exist_ok=True)
for name in os.listdir(seeds):
    if name.startswith("hostile-"):
        os.remove(os.path.join(seeds, name))
for i, c in enumerate(cases):
    if "payload" in c:
        payload = render(c["payload"]).encode()
    elif "payload_b64" in c:
        payload = base64.b64decode(c["payload_b64"])
    else:
        continue
    data = ("dosetrack/v1/" + c["topic"]).encode() + b"\n" + payload
    if len(data) <= 4096:
        with open(os.path.join(seeds, f"hostile-{i + 1:03}"), "wb") as f:
            f.write(data)

nbad = sum(1 for c in cases if c["expect"] not in ("ok", "redelivery"))
nbroker = sum(1 for c in cases if c["expect"] not in ("ok", "redelivery") and c.get("broker", True))
print(f"{len(cases)} cases, {nbad} bad ({nbroker} through the broker), {len(cases)-nbad} good")
from collections import Counter
print(Counter(c["expect"] for c in cases))
