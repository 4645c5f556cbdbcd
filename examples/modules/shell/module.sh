#!/usr/bin/env bash
# A mesh module in bash (docs/protocol.md): socat accepts the connections and runs this script
# once per connection (--connection), jq reads and writes the JSON. Needs bash, socat and jq.
#
#   examples/modules/shell/module.sh --port 8109 [--name sh_echo]
#   python -m shared_utils.conformance 127.0.0.1:8109
#
# It meets the required rules and the 1 MiB line limit; it leaves out HELP, STATUS, SUBSCRIBE
# and the semicolon mode (the checker warns about them; the control room does without them).
#
# Your own commands: add the name to COMMANDS and a function cmd_NAME that prints its result as
# JSON. It gets the arguments as a JSON object in $1 (read them with jq); for an error it prints
# the message instead and returns 1.
#
# Token: with $MESH_TOKEN set, every connection must send AUTH|{"token": "..."} first, and only
# the right token is accepted (SHA-256 digests compared, so the time taken does not depend on
# how much of a guess was right). Without a token the module binds loopback only and AUTH
# answers true because nothing is locked. Never answer AUTH with success without comparing.
set -u

COMMANDS=(ECHO STOP CLOSE GET_PCOMMS UP AUTH)

cmd_ECHO() { printf '%s' "$1"; }
cmd_STOP() { printf '{"stopped_tasks": []}'; }
cmd_CLOSE() { printf '{"closing": %s, "stopped_tasks": []}' "$(json_string "$NAME")"; }
cmd_UP() { printf 'true'; }
cmd_GET_PCOMMS() { printf '%s\n' "${COMMANDS[@]}" | jq -Rsc 'split("\n") | map(select(. != ""))'; }
cmd_AUTH() {
    local given
    given=$(printf '%s' "$1" | jq -r '.token | strings') || true
    if [[ -z $given ]]; then
        printf "AUTH: argument 'token' (a string) is required"
        return 1
    fi
    [[ -z ${MESH_TOKEN:-} ]] && { printf 'true'; return 0; } # no token: nothing is locked
    if [[ $(printf '%s' "$given" | sha256sum) == "$(printf '%s' "$MESH_TOKEN" | sha256sum)" ]]; then
        printf 'true' # the caller marks the connection authenticated
        return 0
    fi
    mesh_log warning "wrong AUTH token" "{}" # never the token itself
    printf 'AUTH: wrong token'
    (( failures + 1 >= 3 )) && printf '; connection closed after 3 failures'
    return 1
}

MAX_LINE=1048576
NAME=${SH_MODULE_NAME:-sh_module}

json_string() { printf '%s' "$1" | jq -Rsc .; }

# One log record to the central receiver ($MESH_LOG_SERVER, default 127.0.0.1:9020; "none" = off):
# a 4-byte big-endian length, then the record as UTF-8 JSON (docs/logging.md).
mesh_log() {
    local level=$1 event=$2 kv=${3:-'{}'} server=${MESH_LOG_SERVER-127.0.0.1:9020} body n head
    [[ ${MESH_LOG_CONSOLE:-1} != 0 ]] && printf '%s: %s %s\n' "$NAME" "$event" "$kv" >&2
    case ${server,,} in "" | none | off | 0 | false | no | disabled) return 0 ;; esac
    [[ $server == *:* ]] || server="127.0.0.1:$server"
    body=$(jq -nc --arg m "$NAME" --arg l "$level" --arg e "$event" --argjson kv "$kv" \
        --argjson pid "$$" 'now as $t | {mesh: 1,
            time: (($t | floor | todate | rtrimstr("Z")) + "."
                   + ("00000" + (($t - ($t | floor)) * 1e6 | floor | tostring))[-6:] + "+00:00"),
            created: $t, module: $m, name: $m, level: $l, levelname: ($l | ascii_upcase),
            levelno: {info: 20, warning: 30, error: 40}[$l], event: $e, msg: $e, args: [],
            kv: $kv, process: $pid}') || return 0
    n=$(LC_ALL=C; printf '%s' "${#body}")
    printf -v head '\\x%02x\\x%02x\\x%02x\\x%02x' $((n >> 24 & 255)) $((n >> 16 & 255)) \
        $((n >> 8 & 255)) $((n & 255))
    { printf "$head"; printf '%s' "$body"; } |
        socat -u - "TCP:${server%:*}:${server##*:},connect-timeout=1" 2>/dev/null || true
}

# Split one command line into fields: ok/ERR, name, name as JSON, id as JSON, kwargs or error.
read -r -d '' PARSE <<'JQ'
def sane: gsub("[\u0001-\u001f]"; "?");
def out($ok; $cmd; $id; $rest): [$ok, ($cmd | sane), ($cmd | tojson), $id, $rest] | join("\u001f");
gsub("^\\s+|\\s+$"; "") as $line
| if ($line | startswith("{")) then
    (try ($line | fromjson) catch null) as $r
    | if ($r | type) != "object" then
        out("ERR"; "?"; ""; "request is not a valid JSON object; send {\"cmd\": \"UP\", \"id\": 1}")
      else (if $r | has("id") then $r.id | tojson else "" end) as $id
        | if ($r.cmd | type) != "string" or ($r.cmd | length) == 0 then
            out("ERR"; "?"; $id; "a JSON request needs a non-empty string 'cmd'")
          elif (($r.kwargs // {}) | type) != "object" then
            out("ERR"; $r.cmd; $id; "'kwargs' must be a JSON object")
          else out("OK"; $r.cmd; $id; ($r.kwargs // {}) | tojson) end
      end
  else ($line | split("|")) as $parts
    | ($parts[0] | gsub("^\\s+|\\s+$"; "")) as $name
    | ($parts[1:] | join("|") | gsub("^\\s+|\\s+$"; "")) as $payload
    | if $payload == "" then out("OK"; $name; ""; "{}")
      else (try ($payload | fromjson | [.]) catch null) as $kw
        | if $kw == null then
            out("ERR"; $name; ""; "payload of \($name) is not valid JSON; send CMD|{\"key\": value}")
          elif ($kw[0] | type) != "object" then
            out("ERR"; $name; ""; "payload of \($name) must be a JSON object, got \($kw[0] | type)")
          else out("OK"; $name; ""; $kw[0] | tojson) end
      end
  end
JQ

resolve() { # exact name first, then case-insensitive
    local c
    for c in "${COMMANDS[@]}"; do [[ $c == "$1" ]] && { printf '%s' "$c"; return 0; }; done
    for c in "${COMMANDS[@]}"; do [[ ${c,,} == "${1,,}" ]] && { printf '%s' "$c"; return 0; }; done
    return 1
}

reply_error() { # name_json id_json message
    local id=${2:+, \"id\": $2}
    printf '{"ok": false, "cmd": %s%s, "error": %s}\n' "$1" "$id" "$(json_string "$3")"
    mesh_log warning "bad request" "{\"error\": $(json_string "$3")}"
}

# One connection: stdin/stdout are the socket (socat runs one of these per client).
serve_connection() {
    export LC_ALL=C # count bytes, pass any byte through to jq
    local line status name name_json id rest cmd result valid authed=0 failures=0
    [[ -z ${MESH_TOKEN:-} ]] && authed=1
    while IFS= read -r -n $((MAX_LINE + 1)) line; do
        if ((${#line} > MAX_LINE)); then
            reply_error '"?"' "" "command longer than $MAX_LINE bytes; connection closed"
            return 0
        fi
        line=${line//$'\r'/}
        [[ -z ${line//[[:space:]]/} ]] && continue
        IFS=$'\x1f' read -r -d '' status name name_json id rest < <(printf '%s' "$line" | jq -Rrj "$PARSE")
        if [[ $status != OK ]]; then
            reply_error "$name_json" "$id" "$rest"
        elif ! cmd=$(resolve "$name"); then
            printf -v valid '%s, ' "${COMMANDS[@]}"
            reply_error "$name_json" "$id" "unknown command '$name'. Valid commands: ${valid%, }"
        elif ((!authed)) && [[ $cmd != AUTH ]]; then
            reply_error "$name_json" "$id" 'authentication required: send AUTH|{"token": "..."} first'
        elif result=$("cmd_$cmd" "$rest"); then
            printf '{"ok": true, "cmd": "%s"%s, "result": %s}\n' "$cmd" "${id:+, \"id\": $id}" "$result"
            [[ $cmd == AUTH ]] && authed=1 failures=0
            [[ $cmd == CLOSE ]] && kill -TERM "$SH_MODULE_PID" # the listener stops, we exit 0
        else
            reply_error "\"$cmd\"" "$id" "$result"
            [[ $cmd == AUTH ]] && ((++failures >= 3)) && return 0
        fi
    done
}

if [[ ${1:-} == --connection ]]; then
    serve_connection
    exit 0
fi

port=8109 ip=127.0.0.1
while (($#)); do
    case $1 in
    --port) port=$2; shift 2 ;;
    --ip) ip=$2; shift 2 ;;
    --name) NAME=$2; shift 2 ;;
    *) echo "usage: $0 [--port P] [--ip 127.0.0.1] [--name NAME]" >&2; exit 2 ;;
    esac
done
for tool in socat jq sha256sum; do
    command -v "$tool" >/dev/null || { echo "$NAME: needs $tool (apt-get install $tool)" >&2; exit 2; }
done
if [[ $ip != 127.* && -z ${MESH_TOKEN:-} ]]; then
    echo "$NAME: binding $ip needs a token: set MESH_TOKEN (clients then send AUTH first)" >&2
    exit 2
fi
export SH_MODULE_NAME=$NAME SH_MODULE_PID=$$
here=$(cd "$(dirname "$0")" && pwd)
(cd "$here" && exec socat "TCP-LISTEN:$port,bind=$ip,reuseaddr,fork" "EXEC:./module.sh --connection") &
socat_pid=$!
trap 'kill "$socat_pid" 2>/dev/null; wait "$socat_pid"; mesh_log info closed; exit 0' TERM INT
sleep 0.1 # socat binds (or fails) within this
if kill -0 "$socat_pid" 2>/dev/null; then
    mesh_log info listening "{\"ip\": \"$ip\", \"port\": $port}"
fi
wait "$socat_pid"
code=$?
mesh_log error "socat exited" "{\"code\": $code}"
exit "$code"
