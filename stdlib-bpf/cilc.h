/* cilc's BPF-side library: the types shared by the parser, the program
 * entries and the code cilc generates from a policy.
 *
 * The generated classifier reads `struct cilc_ctx` by offset; the offsets
 * are asserted here and mirrored in compiler/src/codegen/layout.rs. */
#ifndef CILC_H
#define CILC_H

#include <linux/types.h>

/* Words of predicate bits per identity: bit 0 world, bit 1 host, then one
 * bit per selector of the policy (the manifest lists them). */
#define CILC_PRED_WORDS 8
/* Named container ports per identity (the manifest lists the names). */
#define CILC_NAMED_PORTS 16

/* What the loader stores per address (LPM trie value). */
struct cilc_ident {
	__u64 bits[CILC_PRED_WORDS];
	__u16 ports[CILC_NAMED_PORTS];
};

struct cilc_ident_key {
	__u32 prefixlen;
	/* IPv6, or IPv4 mapped (::ffff:a.b.c.d). */
	__u8 addr[16];
};

/* One parsed packet and the identities of its ends. */
struct cilc_ctx {
	/* Addresses as 128-bit numbers: [0] the high half, [1] the low
	 * half (an IPv4 address is the low 32 bits of [1]). */
	__u64 src[2];
	__u64 dst[2];
	__u32 proto;
	__u32 sport;
	__u32 dport;
	__u32 icmp_type;
	__u32 icmp_code;
	__u32 tcp_flags;
	__u32 v6;
	__u32 len;
	__u64 src_bits[CILC_PRED_WORDS];
	__u64 dst_bits[CILC_PRED_WORDS];
	__u16 dst_ports[CILC_NAMED_PORTS];
	/* Working slots of the generated classifier (best term so far, its
	 * decision, the first chain accept, the term a diagram part found and
	 * its decision). In the scratch map with the rest: the verifier does
	 * not know their values, so diagram parts walked one after another do
	 * not multiply its states. */
	__u32 slots[6];
	/* For connection tracking: the identifier of an ICMP echo, and the
	 * flow an ICMP error quotes (its inner headers) when quoted is 1. */
	__u32 icmp_id;
	__u32 quoted;
	__u64 q_src[2];
	__u64 q_dst[2];
	__u32 q_sport;
	__u32 q_dport;
	__u32 q_proto;
	/* Where the IP and L4 headers start in the frame (for NAT). */
	__u16 l3_off;
	__u16 l4_off;
	/* Source NAT (see docs/runtime.md). Set by the TC entries that
	 * translate (attached only to interfaces that source-NAT): 1, and the
	 * interface. Set by cilc_judge: what the entry must rewrite (nat: 1
	 * the source, 2 the destination), from old to new address and port
	 * (or ICMP echo identifier). */
	__u32 nat_hook;
	__u32 pad;
	__u32 ifindex;
	__u32 nat;
	__u64 nat_old[2];
	__u64 nat_new[2];
	__u32 nat_old_port;
	__u32 nat_new_port;
	/* The table walk's numeric fields by tree::Field number, as 32-bit
	 * splits read them: the addresses (an address past 32 bits as
	 * 0xffffffff), protocol, ports, ICMP type and code, and 0 for no
	 * field. Indexed by a node's field, so a split reads a field with one
	 * load and no branch. */
	__u32 walk_fields[8];
};

_Static_assert(__builtin_offsetof(struct cilc_ctx, proto) == 32, "layout");
_Static_assert(__builtin_offsetof(struct cilc_ctx, v6) == 56, "layout");
_Static_assert(__builtin_offsetof(struct cilc_ctx, src_bits) == 64, "layout");
_Static_assert(__builtin_offsetof(struct cilc_ctx, dst_bits) == 128, "layout");
_Static_assert(__builtin_offsetof(struct cilc_ctx, dst_ports) == 192, "layout");
_Static_assert(__builtin_offsetof(struct cilc_ctx, slots) == 224, "layout");
_Static_assert(sizeof(struct cilc_ctx) == 392, "layout");

/* Outcome of parsing. */
enum cilc_parsed {
	CILC_OK = 0,
	CILC_NOT_IP = 1,
	CILC_MALFORMED = 2,
	CILC_LATER_FRAGMENT = 3,
};

/* Reasons, in the order of eval::Reason (the low 4 bits of a decision;
 * the rest is the deciding rule id + 1, or 0). */
enum cilc_reason {
	CILC_MATCHED_ALLOW = 0,
	CILC_MATCHED_DENY = 1,
	CILC_DEFAULT_DENY = 2,
	CILC_NO_POLICY = 3,
	CILC_CHAIN_ACCEPT = 4,
	CILC_CHAIN_DROP = 5,
	CILC_REASON_MALFORMED = 6,
	CILC_REASON_LATER_FRAGMENT = 7,
	CILC_NOT_JUDGED = 8,
	/* Decided by connection tracking, before any policy lookup. */
	CILC_CT_REPLY = 9,
	CILC_CT_RELATED = 10,
	CILC_CT_INVALID = 11,
	/* Policy would drop it; the installation is in audit mode. */
	CILC_AUDIT = 12,
	/* Source NAT found no free port (after CILC_NAT_RETRIES tries). */
	CILC_NAT_EXHAUSTED = 13,
	/* Source NAT cannot translate it: a protocol without ports or
	 * identifiers, or no address of its family on the interface. */
	CILC_NAT_UNSUPPORTED = 14,
	CILC_REASONS = 15,
};

/* Counters are kept per direction: key = direction * CILC_REASON_SLOTS +
 * reason. */
#define CILC_REASON_SLOTS 16

enum cilc_direction {
	CILC_INGRESS = 0,
	CILC_EGRESS = 1,
};

/* ---- connection tracking (see docs/runtime.md) ----
 * One LRU hash per family. A key is a flow as its first packet had it,
 * plus the direction that judged that packet; a reply is found under the
 * reversed tuple and the other direction. Addresses and ports are in host
 * order, as parsed. */
struct cilc_ct_key4 {
	__u32 src;
	__u32 dst;
	__u16 sport;
	__u16 dport;
	__u8 proto;
	__u8 dir;
	__u8 pad[2];
};

struct cilc_ct_key6 {
	__u64 src[2];
	__u64 dst[2];
	__u16 sport;
	__u16 dport;
	__u8 proto;
	__u8 dir;
	__u8 pad[2];
};

_Static_assert(sizeof(struct cilc_ct_key4) == 16, "layout");
_Static_assert(sizeof(struct cilc_ct_key6) == 40, "layout");

enum cilc_ct_state {
	CILC_CT_SYN_SENT = 1,
	CILC_CT_SYN_RECV = 2,
	CILC_CT_ESTABLISHED = 3,
	/* One side has sent FIN. */
	CILC_CT_FIN_WAIT = 4,
	/* Both sides have sent FIN. */
	CILC_CT_CLOSING = 5,
	/* Reset. */
	CILC_CT_CLOSED = 6,
	/* Not TCP. */
	CILC_CT_OTHER = 7,
};

struct cilc_ct_entry {
	/* CLOCK_MONOTONIC nanoseconds (bpf_ktime_get_ns). */
	__u64 expires;
	__u64 created;
	__u64 last_seen;
	/* [0] the original direction, [1] replies. */
	__u64 packets[2];
	__u64 bytes[2];
	/* Rule id + 1 that allowed the first packet (0: none decided). */
	__u32 rule;
	__u8 state;
	/* Bit 0: FIN seen from the originator; bit 1: from the responder. */
	__u8 fin;
	__u8 pad[2];
};

_Static_assert(sizeof(struct cilc_ct_entry) == 64, "layout");

/* Timeouts, by kind of state. */
enum cilc_ct_timeout {
	CILC_TIMEOUT_SYN = 0,
	CILC_TIMEOUT_ESTABLISHED = 1,
	CILC_TIMEOUT_CLOSE = 2,
	CILC_TIMEOUT_OTHER = 3,
	CILC_TIMEOUTS = 4,
};

#define CILC_CFG_CT 1u
#define CILC_CFG_AUDIT 2u

/* What the loader configures (one entry; all zero: no tracking, which is
 * how `cilc run` and the tests judge packets one by one). */
struct cilc_config {
	__u32 flags;
	/* Source ports (and ICMP echo identifiers) NAT allocates. */
	__u16 nat_port_min;
	__u16 nat_port_max;
	__u64 timeout_ns[CILC_TIMEOUTS];
};

/* ---- source NAT ----
 * The interfaces that translate are keyed by interface index (the loader
 * refuses two of them with one index in different namespaces; other
 * interfaces run programs that do not look). */
/* The addresses `snat` (masquerade) translates to on that interface. */
struct cilc_nat_iface {
	__u32 has4;
	__u32 has6;
	__u64 addr4;
	__u64 addr6[2];
};

/* What a rule's `snat` says (per rule id; kind 0: none). */
#define CILC_SNAT_NONE 0
#define CILC_SNAT_MASQUERADE 1
#define CILC_SNAT_TO 2

struct cilc_rule_snat {
	__u32 kind;
	/* For CILC_SNAT_TO: the address and its family. */
	__u32 v6;
	__u64 addr[2];
};

/* A flow as one side of the translation sees it (tuple convention of
 * conntrack: an ICMP echo's identifier is the request's source port and
 * the reply's destination port). IPv4 addresses are in [1]. */
struct cilc_nat_key {
	__u64 src[2];
	__u64 dst[2];
	__u16 sport;
	__u16 dport;
	__u8 proto;
	__u8 v6;
	__u8 pad[2];
};

/* Forward (original flow → the address and port it leaves with) and
 * reverse (the reply as it arrives → the original address and port).
 * `seen`: a forward entry's last use (every packet it translates), a
 * reverse entry's creation. */
struct cilc_nat_entry {
	__u64 addr[2];
	__u64 seen;
	__u16 port;
	__u8 pad[6];
};

_Static_assert(sizeof(struct cilc_nat_key) == 40, "layout");
_Static_assert(sizeof(struct cilc_nat_entry) == 32, "layout");

/* Ports tried before a new flow is dropped as CILC_NAT_EXHAUSTED (as
 * Cilium's SNAT_COLLISION_RETRIES). */
#define CILC_NAT_RETRIES 32

/* Connection-tracking events, counted per CPU. */
enum cilc_ct_event {
	CILC_CT_CREATED = 0,
	/* An entry could not be stored: the packet passes untracked. */
	CILC_CT_INSERT_FAILED = 1,
	/* Policy now denies a tracked flow: its entry is deleted. */
	CILC_CT_DELETED_BY_POLICY = 2,
	/* A TCP flow seen first mid-stream (no SYN), tracked as established. */
	CILC_CT_PICKUP = 3,
	/* A source NAT mapping was created. */
	CILC_NAT_CREATED = 4,
	/* A port NAT tried was taken (each collision counts once). */
	CILC_NAT_COLLISION = 5,
	CILC_CT_EVENTS = 6,
};

/* ---- the table strategy ----
 * The decision diagrams as data (compiler/src/codegen/table.rs writes
 * them, the loader fills the map `cilc_table` from the object's section
 * `.cilc.table`), walked by cilc_walk: the code is the same for every
 * policy. Node 0 is never a child (a walk that reaches it is over); nodes
 * 1..4 are the hooks' heads (1 + direction * 2 + v6); node 5 is
 * CILC_T_NONE. */
enum cilc_tnode_kind {
	/* a: first entry, b: number of entries. */
	CILC_T_HEAD = 1,
	/* One root of a diagram. a: the root node; b: CILC_T_POLICY (the
	 * policy layer, else a chain) | CILC_T_LAST (its diagram's last)
	 * | CILC_T_GUARD; c: the best (lowest) priority of a decision below
	 * the root (0xffffffff: none), so that a part that cannot beat the
	 * best so far is not walked. With CILC_T_GUARD the part decides only
	 * when predicate bit `arg` of end `field` is set (its subject); when
	 * it is not: if the packet's word of that bit has one of the bits
	 * cut[0] (the later subjects of its dispatch block), the walk goes on
	 * at the entry the slot (cut[1] >> 32) + that bit's place copies (a
	 * copy of the entry, its index in cut[1]); else it skips cut[1] &
	 * 0xffffff entries (this one included; the last one's flags are
	 * (cut[1] >> 24) & 0xff) as parts that decide nothing. */
	CILC_T_ENTRY = 2,
	/* field < cut (cut[0] high half, cut[1] low half): a, else b. Field:
	 * tree::Field's index (0 src, 1 dst, proto, sport, dport, ICMP
	 * type, code). c: the best priority of a decision below, like an
	 * entry's (0 prunes only behind a priority-0 decision, which nothing
	 * beats). */
	CILC_T_SPLIT = 3,
	/* Predicate bit `arg` of end `field` (0 src, 1 dst) set: a, else b. */
	CILC_T_BIT = 4,
	/* The destination names its port dport in slot `arg`: a, else b. */
	CILC_T_PORT = 5,
	/* tcp_flags & arg == c: a, else b. */
	CILC_T_FLAGS = 6,
	/* The first term of this part: decision a (0: none), priority b. */
	CILC_T_LEAF = 7,
	/* Multi-way split of `field` from base `cut`: below it, a; else
	 * slot (field - cut) >> shift, node c + slot, when below the
	 * count; else b. arg: shift (bits 0-6) | count << 7. The count's
	 * slots are consecutive nodes, each a copy of the node it leads to. */
	CILC_T_JUMP = 8,
	/* A chain of tests of the predicate bits of end `field` in the mask
	 * cut (cut[1] of word `arg` & 7, cut[0] of the word after it), each
	 * bit's tests going on to the next when it is clear, or when it is
	 * set for the bits in arg >> CILC_T_ANY_FLIP_SHIFT (a mask of the
	 * low word's bits 0-1: tests of none of the world or host bit).
	 * None of them on its other side: b (where the chain ends then);
	 * one, node c + its rank among the mask's bits (a copy of the node
	 * that bit's first test leads to then); more, a (the chain's first
	 * test). */
	CILC_T_ANY = 9,
	/* Two levels of splits in one node: field f1 below cut 1, then
	 * (field f0 below cut 0: a, else b), else (field f2 below cut 2: c,
	 * else d). Cuts are 32 bits (values past them compare as
	 * 0xffffffff): cuts 0 and 1 are cut[0]'s low and high words, cut 2
	 * cut[1]'s low word, d its high word. `field`: f1 | f0 << 3; arg: f2
	 * | (a lower bound of the best priority below, like a split's c,
	 * >> CILC_T_SPLIT2_PRIO_SHIFT) << 3. */
	CILC_T_SPLIT2 = 10,
};

/* table.rs `ANY_FLIP_SHIFT`. */
#define CILC_T_ANY_FLIP_SHIFT 14

/* table.rs `SPLIT2_PRIO_SHIFT`. */
#define CILC_T_SPLIT2_PRIO_SHIFT 5

/* Node 5 is a leaf of no decision: where a part not worth walking goes. */
#define CILC_T_NONE 5u

#define CILC_T_POLICY 1u
#define CILC_T_LAST 2u
#define CILC_T_GUARD 4u

struct cilc_tnode {
	__u8 kind;
	__u8 field;
	__u16 arg;
	__u32 a;
	__u32 b;
	__u32 c;
	__u64 cut[2];
};

_Static_assert(sizeof(struct cilc_tnode) == 32, "layout");

/* Defined by the code cilc generates for a policy, and inlined into
 * cilc_decide (cilc.c). */
extern __u32 cilc_classify(struct cilc_ctx *ctx, __u32 direction);

/* The table strategy's classifier (cilc.c); the code generated for a
 * table-strategy object calls it. */
extern __u32 cilc_walk(struct cilc_ctx *ctx, __u32 direction);

#endif
