//! Every variable netstrap reads: the single source of the configuration reference in
//! README.md (a test checks that the README lists each one).

/// One configuration variable.
#[derive(Debug, Clone, Copy)]
pub struct Variable {
    pub name: &'static str,
    pub default: &'static str,
    pub meaning: &'static str,
}

const fn v(name: &'static str, default: &'static str, meaning: &'static str) -> Variable {
    Variable { name, default, meaning }
}

/// EdgeLake/AnyLog variables, read with EdgeLake's names, meanings and defaults.
pub const EDGELAKE: &[Variable] = &[
    v(
        "NODE_TYPE",
        "generic",
        "master, operator, query, publisher, generic, master-operator, master-publisher (EdgeLake requires it; netstrap defaults to generic so it runs with no configuration)",
    ),
    v(
        "NODE_NAME",
        "<hostname> <node_type>",
        "node name in the policy; in Kubernetes the hostname part is the Service name, which survives restarts",
    ),
    v("COMPANY_NAME", "New Company", "company in the policy"),
    v("LOCATION", "0.0, 0.0", "`loc` in the policy (never looked up on the internet)"),
    v("COUNTRY", "Unknown", "`country` in the policy"),
    v("STATE", "Unknown", "`state` in the policy"),
    v("CITY", "Unknown", "`city` in the policy"),
    v(
        "ANYLOG_SERVER_PORT",
        "by type: 32048 master, 32148 operator, 32248 publisher, 32348 query, 32548 other",
        "TCP (peer messaging) internal port",
    ),
    v("ANYLOG_REST_PORT", "by type: 32049, 32149, 32249, 32349, 32549", "REST internal port"),
    v(
        "ANYLOG_BROKER_PORT",
        "unset (no broker)",
        "message broker internal port; conventions 32150 operator, 32250 publisher, 32550 generic",
    ),
    v("TCP_BIND", "false", "true: listen only on the local (virtual) IP; false: all interfaces"),
    v("REST_BIND", "false", "as TCP_BIND, for REST"),
    v("BROKER_BIND", "false", "as TCP_BIND, for the broker"),
    v("TCP_THREADS", "6", "TCP plane workers (min 1)"),
    v("REST_THREADS", "6", "REST plane workers (min 1)"),
    v("BROKER_THREADS", "6", "broker plane workers (min 1)"),
    v("REST_TIMEOUT", "30", "REST request timeout in seconds; < 0 means 0 = no limit"),
    v(
        "LEDGER_CONN",
        "127.0.0.1:32048",
        "master TCP address; a 127.0.0.1 value is recomputed from this node's address (master: own port; others: 32048)",
    ),
    v("LOCAL_IP", "discovered", "local (virtual) IP to bind and report; first in the local IP chain"),
    v("EXTERNAL_IP", "discovered", "external IP; first in the external IP chain"),
    v(
        "OVERLAY_IP",
        "unset",
        "this node's overlay-network address (Tailscale, Nebula): replaces the local IP in policies — `local_ip` \
         when no DNS/Service name is set, `ip` when no EXTERNAL_IP is (the `overlay` external source); see \
         NETSTRAP_OVERLAY and docs/overlay.md",
    ),
    v(
        "HZN_DEVICE_ID",
        "unset",
        "Open Horizon device id: NODE_NAME becomes `<NODE_NAME>_<id>` (the id alone without NODE_NAME), and the \
         policy gets `hzn_device_id` and `hzn_node_id`, as EdgeLake's deploy_edgelake.sh and node_policy.al do",
    ),
    v("HZN_NODE_ID", "unset", "Open Horizon node id: the policy's `hzn_node_id` when HZN_DEVICE_ID is unset"),
    v("HZN_ORGANIZATION", "unset", "Open Horizon organization: the policy's `hzn_org`"),
    v("ENABLE_DNS", "false", "when true, EXTERNAL_DNS goes into the policy's `ip`"),
    v("EXTERNAL_DNS", "unset", "external DNS name of this node"),
    v("DNS", "unset", "stable name for `local_ip` outside Kubernetes"),
    v("DNS_DOMAIN", "unset", "stable name `<hostname>.<DNS_DOMAIN>` for `local_ip`"),
    v(
        "KUBERNETES_SERVICE_IP",
        "unset",
        "the AnyLog docs' name for the Service to advertise (same as NETSTRAP_SERVICE)",
    ),
    v(
        "IS_HIDDEN",
        "false",
        "master/query/publisher: the node declares no node policy (EdgeLake's main.al); with \
         NETSTRAP_DECLARE=node netstrap then waits for none",
    ),
    v("IS_KUBERNETES", "detected", "true/false forces the environment kind to kubernetes/host"),
    v("PROXY_IP", "unset", "EdgeLake chart's `<ns>.<svc>.svc.cluster.local` (reversed); read only to warn"),
    v("CLUSTER_NAME", "unset", "operator: the cluster policy's name, looked up in the registry for its id"),
    v("CONFIG_NAME", "<node_type>-<company>-configs[-broker]", "config policy name"),
    v("HOSTNAME", "the system hostname", "hostname in the policy and default node name outside Kubernetes"),
    v("POD_IP", "unset", "downward API status.podIP"),
    v("POD_IPS", "unset", "downward API status.podIPs (comma-separated, dual-stack)"),
    v("POD_NAME", "unset", "downward API metadata.name"),
    v("POD_NAMESPACE", "service-account namespace file", "downward API metadata.namespace"),
    v("HOST_IP", "unset", "downward API status.hostIP (the node's IP)"),
    v(
        "K8S_NODE_NAME",
        "unset",
        "downward API spec.nodeName (NODE_NAME is EdgeLake's node name, so the Kubernetes node name needs its own variable)",
    ),
    v("KUBERNETES_SERVICE_HOST", "set by Kubernetes", "API server address (in-cluster)"),
    v("KUBERNETES_SERVICE_PORT", "set by Kubernetes", "API server port (in-cluster)"),
    v("KUBECONFIG", "unset", "kubeconfig file, used when not in-cluster"),
];

/// netstrap's own settings.
pub const NETSTRAP: &[Variable] = &[
    v("NETSTRAP_ENVIRONMENT", "auto", "auto, kubernetes, docker or host"),
    v("NETSTRAP_SERVICE", "unset", "the Service whose name is advertised (required in Kubernetes)"),
    v("NETSTRAP_NAMESPACE", "POD_NAMESPACE", "the Service's namespace"),
    v("NETSTRAP_CLUSTER_DOMAIN", "from the resolv.conf search list", "cluster DNS domain"),
    v(
        "NETSTRAP_PER_POD_NAME",
        "false",
        "advertise `<pod>.<svc>.<ns>.svc.<domain>` (headless Service / StatefulSet)",
    ),
    v("NETSTRAP_INTERFACE", "unset", "take the local IP from this interface"),
    v("NETSTRAP_CIDR", "unset", "take the local IP from the interface address in this CIDR"),
    v(
        "NETSTRAP_OVERLAY",
        "unset",
        "the overlay network this node is reached on, as an interface name (tailscale0, nebula1) or a CIDR \
         (100.64.0.0/10): its address is OVERLAY_IP's value (OVERLAY_IP wins when both are set) and the local IP \
         after NETSTRAP_CIDR; no such address is an error naming the interfaces there (docs/overlay.md)",
    ),
    v("NETSTRAP_IP_FAMILY", "ipv4", "preferred local IP family when several: ipv4 or ipv6"),
    v(
        "NETSTRAP_EXTERNAL_SOURCES",
        "explicit,overlay,service,node,stun,echo,fallback",
        "external IP chain, in order; add aws, gcp or azure to ask instance metadata",
    ),
    v("NETSTRAP_SOURCE_TIMEOUT_MS", "2000", "timeout of each network discovery source"),
    v("NETSTRAP_STUN_SERVERS", "unset (off)", "STUN servers host:port, comma-separated"),
    v("NETSTRAP_ECHO_URL", "unset (off)", "HTTP echo URL that answers with the caller's IP"),
    v(
        "NETSTRAP_METADATA_URL",
        "the cloud's link-local endpoint",
        "base URL of the instance metadata service",
    ),
    v(
        "NETSTRAP_SA_DIR",
        "/var/run/secrets/kubernetes.io/serviceaccount",
        "service-account directory (token, ca.crt, namespace)",
    ),
    v("NETSTRAP_KUBECONFIG", "KUBECONFIG", "kubeconfig file (outside the cluster)"),
    v("NETSTRAP_RESOLV_CONF", "/etc/resolv.conf", "resolver configuration: nameservers and the search list"),
    v(
        "NETSTRAP_NAMESERVER",
        "resolv.conf nameservers",
        "nameservers ip[:port], comma-separated, for resolving the stable name",
    ),
    v(
        "NETSTRAP_TCP_MODE",
        "relay when NETSTRAP_TCP_UPSTREAM is set, else native",
        "native (netstrap's peer protocol) or relay",
    ),
    v(
        "NETSTRAP_TCP_UPSTREAM",
        "unset (node mode: 127.0.0.1:advertised port)",
        "co-located node's TCP address for relay mode",
    ),
    v("NETSTRAP_TCP_PROXY_PROTOCOL", "false", "send a PROXY protocol v2 header to the TCP upstream"),
    v("NETSTRAP_REST_UPSTREAM", "unset", "co-located node's REST address; other paths are proxied there"),
    v(
        "NETSTRAP_TRUSTED_PROXIES",
        "unset",
        "comma-separated IPs/CIDRs of proxies in front of netstrap whose X-Forwarded-For is kept; from any other peer it is replaced by the peer's address",
    ),
    v(
        "NETSTRAP_REST_MAX_CONNECTIONS",
        "4096",
        "concurrent connections of the rest plane (~11 KiB each when idle); more are closed at accept, logged at most once per 10 s",
    ),
    v(
        "NETSTRAP_ADMIN_ADDR",
        "unset (`/metrics` and `/v1/*` on the rest port)",
        "ip:port of a separate admin listener (plain HTTP) serving `/metrics` and `/v1/*`; when set, the rest port answers 404 for those but keeps the probes (`/livez`, `/readyz`, `/health`) and `/v1/identity` (self-verification); a bind failure stops start-up",
    ),
    v(
        "NETSTRAP_READY_UPSTREAM",
        "false (true with `NETSTRAP_DECLARE=node`)",
        "readiness also requires every upstream (relay or REST proxy target) to accept a connection",
    ),
    v(
        "NETSTRAP_DECLARE",
        "netstrap",
        "who declares the node policy: netstrap (renders and declares it) or node (the node's own \
         scripts, e.g. EdgeLake's main.al, declare it with the stable inputs netstrap writes to \
         netstrap.env; netstrap relays to the node's advertised ports on loopback, checks the \
         registry and removes stale copies; docs/edgelake.md)",
    ),
    v(
        "NETSTRAP_TCP_PORT",
        "ANYLOG_SERVER_PORT",
        "netstrap's own TCP listening port (the Service's targetPort); with NETSTRAP_DECLARE=node it \
         must differ from the advertised port, which the node binds itself",
    ),
    v("NETSTRAP_REST_PORT", "ANYLOG_REST_PORT", "netstrap's own REST listening port, as NETSTRAP_TCP_PORT"),
    v(
        "NETSTRAP_BROKER_PORT",
        "ANYLOG_BROKER_PORT",
        "netstrap's own broker listening port, as NETSTRAP_TCP_PORT",
    ),
    v(
        "NETSTRAP_PORT_OFFSET",
        "unset",
        "host networking (NETSTRAP_DECLARE=node only): each NETSTRAP_*_PORT not set defaults to the node's own port \
         (ANYLOG_*_PORT) + this offset, so several nodes on one host, each with its own ports, never share one \
         (docker/compose.host.yaml, k8s/overlays/hostnetwork); 1 to 64511",
    ),
    v("NETSTRAP_BROKER_MODE", "embedded when ANYLOG_BROKER_PORT is set", "embedded, relay or off"),
    v("NETSTRAP_BROKER_UPSTREAM", "unset", "co-located broker address for relay mode"),
    v(
        "NETSTRAP_BROKER_BACKLOG",
        "4MiB",
        "embedded broker: recent messages kept per topic filter for subscribers that lag, counted as \
         the memory they take (topic + payload + ~200 bytes each); publishers wait for one further \
         behind (NETSTRAP_BROKER_SLOW_SUBSCRIBER_TIMEOUT); the broker's worst case is \
         NETSTRAP_BROKER_MAX_FILTERS times this (docs/broker.md); bytes or KiB/MiB/GiB, 64KiB to 4GiB",
    ),
    v(
        "NETSTRAP_BROKER_SLOW_SUBSCRIBER_TIMEOUT",
        "30",
        "embedded broker: when a subscriber lags by the whole backlog, its publishers wait for it \
         (no PUBACK, their sockets not read); one that holds them up this many seconds is \
         disconnected (counted in netstrap_broker_slow_subscribers_disconnected_total); 0: nobody \
         waits and it skips the oldest messages instead; whole seconds, 0 to 3600",
    ),
    v(
        "NETSTRAP_BROKER_MAX_SUBSCRIPTIONS",
        "32",
        "embedded broker: topic filters one client connection may hold; a SUBSCRIBE beyond gets a \
         SUBACK failure (0x80), counted in netstrap_broker_refused_total",
    ),
    v(
        "NETSTRAP_BROKER_MAX_FILTERS",
        "64",
        "embedded broker: distinct topic filters taken on since start (rumqttd keeps each filter's \
         state until exit, its backlog while someone reads it); a SUBSCRIBE to a new filter beyond \
         gets a SUBACK failure (0x80)",
    ),
    v(
        "NETSTRAP_BROKER_ANONYMOUS",
        "false",
        "embedded broker: accept clients without credentials on an address beyond loopback; without \
         it such a broker needs NETSTRAP_BROKER_USERNAME/PASSWORD (netstrap refuses to start)",
    ),
    v(
        "NETSTRAP_TCP_EXTERNAL_PORT",
        "from the Service, else the internal port",
        "externally reachable TCP port (e.g. a Docker published port)",
    ),
    v(
        "NETSTRAP_REST_EXTERNAL_PORT",
        "from the Service, else the internal port",
        "externally reachable REST port",
    ),
    v(
        "NETSTRAP_BROKER_EXTERNAL_PORT",
        "from the Service, else the internal port",
        "externally reachable broker port",
    ),
    v(
        "NETSTRAP_SHUTDOWN_DELAY",
        "5 in Kubernetes, else 0",
        "seconds between readiness turning 503 and closing the listeners (endpoint propagation)",
    ),
    v(
        "NETSTRAP_DATA_NICE",
        "10",
        "how many nice levels (0-19) below the rest plane the tcp and broker planes' threads run, so \
         that under CPU saturation probes are scheduled first; 0 turns this off",
    ),
    v("NETSTRAP_SHUTDOWN_GRACE", "20", "seconds in-flight work gets to finish after the listeners close"),
    v(
        "NETSTRAP_BROKER_USERNAME",
        "unset",
        "MQTT username the embedded broker requires (with NETSTRAP_BROKER_PASSWORD)",
    ),
    v("NETSTRAP_BROKER_PASSWORD", "unset", "MQTT password the embedded broker requires; never logged"),
    v(
        "NETSTRAP_LEDGER",
        "none",
        "registry the node policy is declared in: anylog://host:rest_port (an EdgeLake node), \
         file:///path/blockchain.json (EdgeLake's JSON-lines ledger, shareable) or none",
    ),
    v(
        "NETSTRAP_CLUSTER_ID",
        "unset",
        "operator: the cluster policy's id (else looked up or declared from CLUSTER_NAME)",
    ),
    v(
        "NETSTRAP_STATE_DIR",
        "./netstrap-state",
        "where netstrap writes the node's files (netstrap.env, policies, network.json); one instance per directory (`netstrap.lock` holds the pid: a second instance exits 2 naming it)",
    ),
    v("NETSTRAP_WATCH_INTERVAL", "30", "seconds between re-discoveries; an advertised change is re-declared"),
    v(
        "NETSTRAP_VERIFY",
        "report",
        "self-verification of the advertised endpoints: report, gate (readiness waits for it) or off",
    ),
    v(
        "NETSTRAP_TLS_CERT",
        "unset (no TLS)",
        "PEM certificate chain (leaf first) for TLS on the rest and broker planes; reloaded when it changes",
    ),
    v(
        "NETSTRAP_TLS_KEY",
        "unset (no TLS)",
        "PEM private key of NETSTRAP_TLS_CERT (PKCS#8, PKCS#1 or SEC1); both or neither",
    ),
    v(
        "NETSTRAP_TLS_PLANES",
        "rest,broker when NETSTRAP_TLS_CERT is set",
        "planes served over TLS only: a subset of rest, broker (tcp stays plain: EdgeLake's peer protocol)",
    ),
    v("NETSTRAP_LOG", "info (rumqttd's own lines at warn)", "log filter (tracing EnvFilter syntax)"),
    v("NETSTRAP_LOG_FORMAT", "text", "text or json"),
];

/// The variable named `name` (case-insensitive), if netstrap knows it.
pub fn find(name: &str) -> Option<&'static Variable> {
    EDGELAKE.iter().chain(NETSTRAP).find(|v| v.name.eq_ignore_ascii_case(name))
}

/// The known variable closest to `name`, for "did you mean" hints.
pub fn closest(name: &str) -> Option<&'static str> {
    let name = name.to_ascii_uppercase();
    EDGELAKE
        .iter()
        .chain(NETSTRAP)
        .map(|v| (distance(&name, v.name), v.name))
        .filter(|(d, _)| *d <= 3)
        .min()
        .map(|(_, n)| n)
}

/// Levenshtein distance; names are short.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur.push((prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}
