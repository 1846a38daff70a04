/* cilc's BPF-side library: packet parsing, identity lookups, counters and
 * the program entries. compiler/build.rs compiles it to LLVM bitcode with
 * clang-19; cilc links that bitcode with the classifier it generates for a
 * policy (`cilc_decide`), inlines everything and emits one object. So the
 * programs here are specialised to the policy: nothing is interpreted.
 *
 * Parsing follows docs/semantics.md: S3 (not IP: not judged), S23
 * (malformed: dropped), S24 (later fragments: dropped). Every packet access
 * is checked against data_end, as the verifier requires. */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include "cilc.h"

/* linux/stddef.h makes this a mere hint; the verifier needs real inlining. */
#undef __always_inline
#define __always_inline inline __attribute__((always_inline))

#define SEC(name) __attribute__((section(name), used))
#define __uint(name, val) int(*name)[val]
#define __type(name, val) typeof(val) *name

static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)BPF_FUNC_map_lookup_elem;
static long (*bpf_map_update_elem)(void *map, const void *key, const void *value,
				   __u64 flags) = (void *)BPF_FUNC_map_update_elem;
static long (*bpf_map_delete_elem)(void *map, const void *key) = (void *)BPF_FUNC_map_delete_elem;
static __u64 (*bpf_ktime_get_ns)(void) = (void *)BPF_FUNC_ktime_get_ns;
static long (*bpf_skb_pull_data)(struct __sk_buff *skb, __u32 len) = (void *)BPF_FUNC_skb_pull_data;
static __u32 (*bpf_get_prandom_u32)(void) = (void *)BPF_FUNC_get_prandom_u32;
static long (*bpf_skb_load_bytes)(const void *skb, __u32 offset, void *to,
				  __u32 len) = (void *)BPF_FUNC_skb_load_bytes;
static long (*bpf_skb_store_bytes)(struct __sk_buff *skb, __u32 offset, const void *from,
				   __u32 len, __u64 flags) = (void *)BPF_FUNC_skb_store_bytes;
static long (*bpf_l3_csum_replace)(struct __sk_buff *skb, __u32 offset, __u64 from, __u64 to,
				   __u64 size) = (void *)BPF_FUNC_l3_csum_replace;
static long (*bpf_l4_csum_replace)(struct __sk_buff *skb, __u32 offset, __u64 from, __u64 to,
				   __u64 flags) = (void *)BPF_FUNC_l4_csum_replace;
static __s64 (*bpf_csum_diff)(__be32 *from, __u32 from_size, __be32 *to, __u32 to_size,
			      __wsum seed) = (void *)BPF_FUNC_csum_diff;

#define EEXIST 17


char LICENSE[] SEC("license") = "GPL";

/* Address → identity (predicate bits, named ports). Filled by the loader;
 * an address that is not there is world. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct cilc_ident_key);
	__type(value, struct cilc_ident);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} cilc_idents SEC(".maps");

struct cilc_count {
	__u64 packets;
	__u64 bytes;
};

/* Packets and bytes per deciding rule (by rule id). The loader sizes it
 * from the manifest's rule count. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct cilc_count);
	__uint(max_entries, 1);
} cilc_rule_counts SEC(".maps");

/* Packets and bytes per direction and reason (direction *
 * CILC_REASON_SLOTS + enum cilc_reason). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct cilc_count);
	__uint(max_entries, 2 * CILC_REASON_SLOTS);
} cilc_reason_counts SEC(".maps");

/* Connection tracking, one table per family. The loader sizes them and
 * pins them, so they outlive a replacement of the programs. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct cilc_ct_key4);
	__type(value, struct cilc_ct_entry);
	__uint(max_entries, 65536);
} cilc_ct4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct cilc_ct_key6);
	__type(value, struct cilc_ct_entry);
	__uint(max_entries, 65536);
} cilc_ct6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, CILC_CT_EVENTS);
} cilc_ct_events SEC(".maps");

/* Written by the loader. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct cilc_config);
	__uint(max_entries, 1);
} cilc_config SEC(".maps");

/* Source NAT (see cilc.h): the interfaces that translate and their
 * addresses (written by the loader), each rule's `snat` (from the
 * manifest), and the mappings, forward and reverse. The mappings are not
 * LRU: an existing flow's mapping is never evicted; a full table is
 * CILC_NAT_EXHAUSTED for new flows, and the loader's GC removes mappings
 * whose conntrack entry is gone. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, struct cilc_nat_iface);
	__uint(max_entries, 256);
} cilc_nat_ifaces SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct cilc_rule_snat);
	__uint(max_entries, 1);
} cilc_rule_snat SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct cilc_nat_key);
	__type(value, struct cilc_nat_entry);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} cilc_snat SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct cilc_nat_key);
	__type(value, struct cilc_nat_entry);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} cilc_snat_rev SEC(".maps");

/* The packet being judged. In a map value rather than on the stack: the
 * verifier does not track what a map value holds, so every parse path
 * reaches the classifier in the same state and is verified once there
 * (on the stack, each path's known constants kept the classifier from
 * being pruned, and large policies hit the 1M-instruction limit). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct cilc_ctx);
	__uint(max_entries, 1);
} cilc_scratch SEC(".maps");

/* The last decision (rule id + 1 << 4 | reason), for `cilc run` and tests. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u32);
	__uint(max_entries, 1);
} cilc_last SEC(".maps");

static __always_inline __u64 be64(const __u8 *p)
{
	__u64 v = 0;
#pragma unroll
	for (int i = 0; i < 8; i++)
		v = v << 8 | p[i];
	return v;
}

static __always_inline __u32 be32(const __u8 *p)
{
	return (__u32)p[0] << 24 | (__u32)p[1] << 16 | (__u32)p[2] << 8 | p[3];
}

static __always_inline __u32 be16(const __u8 *p)
{
	return (__u32)p[0] << 8 | p[1];
}

/* A packet pointer from the 32-bit field of a program context. Through
 * an empty asm: otherwise LLVM may compare two such pointers as the 32-bit
 * numbers they came from, and the verifier no longer sees pointers. */
static __always_inline void *ctx_ptr(__u32 field)
{
	__u64 p = field;
	asm volatile("" : "+r"(p));
	return (void *)p;
}

/* Hide a value's origin from the optimiser. Length checks use integers
 * derived through this, pointer checks compare with data_end: otherwise
 * LLVM proves one from the other and drops the check the verifier needs. */
#define opaque(x) asm volatile("" : "+r"(x))

static __always_inline int icmp_echo(__u32 proto, __u32 type, int *reply)
{
	*reply = (proto == 1 && type == 0) || (proto == 58 && type == 129);
	return *reply || (proto == 1 && type == 8) || (proto == 58 && type == 128);
}

static __always_inline int is_icmp(__u32 proto)
{
	return proto == 1 || proto == 58;
}

static __always_inline int icmp_error(__u32 proto, __u32 type)
{
	if (proto == 1)
		return type == 3 || type == 11 || type == 12;
	if (proto == 58)
		return type >= 1 && type <= 4;
	return 0;
}

/* The flow an ICMP error quotes (the packet that caused it): its inner IP
 * header and the first 8 bytes of its L4 header, kept in the context. Run
 * after parse() from a global function of its own (cilc_quote_xdp), it
 * finds the ICMP header again: behind IPv4 options too, but only directly
 * behind an IPv6 header (an error behind extension headers relates to no
 * flow). */
static __always_inline void quote(struct cilc_ctx *c, void *data, void *data_end)
{
	__u8 *end = data_end;
	__u8 *p = data;
	if (p + 14 > end)
		return;
	__u32 type = be16(p + 12);
	__u32 off = 14;
#pragma unroll
	for (int i = 0; i < 2; i++) {
		if (type != 0x8100 && type != 0x88a8)
			break;
		if (p + off + 4 > end)
			return;
		type = be16(p + off + 2);
		off += 4;
	}
	__u8 *ip = p + off;
	if (type == 0x0800 && !c->v6) {
		if (ip + 20 > end)
			return;
		ip += (ip[0] & 0x0f) * 4 + 8;
	} else if (type == 0x86dd && c->v6) {
		if (ip + 40 > end || ip[6] != 58)
			return;
		ip += 40 + 8;
	} else {
		return;
	}
	__u8 *l4;
	if (!c->v6) {
		if (ip + 20 > end || ip[0] >> 4 != 4)
			return;
		__u32 ihl = (ip[0] & 0x0f) * 4;
		if (ihl < 20)
			return;
		c->q_proto = ip[9];
		c->q_src[1] = be32(ip + 12);
		c->q_dst[1] = be32(ip + 16);
		l4 = ip + ihl;
	} else {
		if (ip + 40 > end || ip[0] >> 4 != 6)
			return;
		c->q_proto = ip[6];
		c->q_src[0] = be64(ip + 8);
		c->q_src[1] = be64(ip + 16);
		c->q_dst[0] = be64(ip + 24);
		c->q_dst[1] = be64(ip + 32);
		l4 = ip + 40;
	}
	if (l4 + 8 > end)
		return;
	int reply;
	if (c->q_proto == 6 || c->q_proto == 17 || c->q_proto == 132) {
		c->q_sport = be16(l4);
		c->q_dport = be16(l4 + 2);
	} else if (icmp_echo(c->q_proto, l4[0], &reply)) {
		c->q_sport = reply ? 0 : be16(l4 + 4);
		c->q_dport = reply ? be16(l4 + 4) : 0;
	} else {
		return;
	}
	c->quoted = 1;
}

/* The L4 header at `l4`, with `len` bytes of it left in the IP packet. */
static __always_inline int parse_l4(struct cilc_ctx *c, __u8 *l4, __u32 len, void *data_end)
{
	__u8 *end = data_end;
	switch (c->proto) {
	case 6: { /* TCP */
		if (l4 + 20 > end || len < 20)
			return CILC_MALFORMED;
		__u32 doff = (l4[12] >> 4) * 4;
		if (doff < 20 || doff > len)
			return CILC_MALFORMED;
		c->sport = be16(l4);
		c->dport = be16(l4 + 2);
		/* The 16-bit word of data offset and flags, as ClassBench has it. */
		c->tcp_flags = be16(l4 + 12);
		return CILC_OK;
	}
	case 17: { /* UDP */
		if (l4 + 8 > end || len < 8)
			return CILC_MALFORMED;
		__u32 ulen = be16(l4 + 4);
		if (ulen < 8 || ulen > len)
			return CILC_MALFORMED;
		c->sport = be16(l4);
		c->dport = be16(l4 + 2);
		return CILC_OK;
	}
	case 132: /* SCTP common header */
		if (l4 + 12 > end || len < 12)
			return CILC_MALFORMED;
		c->sport = be16(l4);
		c->dport = be16(l4 + 2);
		return CILC_OK;
	case 1:
	case 58: /* ICMP, ICMPv6 */
		if (l4 + 8 > end || len < 8)
			return CILC_MALFORMED;
		c->icmp_type = l4[0];
		c->icmp_code = l4[1];
		c->icmp_id = be16(l4 + 4);
		return CILC_OK;
	default:
		return CILC_OK;
	}
}

/* IPv4 at `ip`, with `avail` bytes of frame from there. */
static __always_inline int parse_ipv4(struct cilc_ctx *c, __u8 *ip, __u32 avail, void *data_end)
{
	__u8 *end = data_end;
	if (ip + 20 > end || ip[0] >> 4 != 4)
		return CILC_MALFORMED;
	__u32 ihl = (ip[0] & 0x0f) * 4;
	__u32 total = be16(ip + 2);
	if (ihl < 20 || total < ihl || total > avail)
		return CILC_MALFORMED;
	c->l4_off = c->l3_off + ihl;
	c->proto = ip[9];
	c->src[1] = be32(ip + 12);
	c->dst[1] = be32(ip + 16);
	/* Options are skipped: the header length is honoured (S3). */
	if (be16(ip + 6) & 0x1fff)
		return CILC_LATER_FRAGMENT;
	return parse_l4(c, ip + ihl, total - ihl, data_end);
}

/* Extension headers walked before the upper-layer protocol (S23). */
#define CILC_IPV6_EXT_MAX 8

static __always_inline int parse_ipv6(struct cilc_ctx *c, __u8 *ip, __u32 avail, void *data_end)
{
	__u8 *end = data_end;
	if (ip + 40 > end || ip[0] >> 4 != 6)
		return CILC_MALFORMED;
	__u32 total = 40 + be16(ip + 4);
	if (total > avail)
		return CILC_MALFORMED;
	c->v6 = 1;
	c->src[0] = be64(ip + 8);
	c->src[1] = be64(ip + 16);
	c->dst[0] = be64(ip + 24);
	c->dst[1] = be64(ip + 32);
	__u32 nh = ip[6];
	__u8 *h = ip + 40;
	__u32 off = 40;
	int later = 0;
#pragma unroll
	for (int i = 0; i < CILC_IPV6_EXT_MAX; i++) {
		__u32 len;
		if (nh == 0 || nh == 43 || nh == 60) {
			if (h + 2 > end)
				return CILC_MALFORMED;
			nh = h[0];
			len = (h[1] + 1) * 8;
		} else if (nh == 44) {
			if (h + 8 > end)
				return CILC_MALFORMED;
			nh = h[0];
			if (be16(h + 2) & 0xfff8)
				later = 1;
			len = 8;
		} else if (nh == 51) {
			if (h + 2 > end)
				return CILC_MALFORMED;
			nh = h[0];
			len = (h[1] + 2) * 4;
		} else {
			break;
		}
		h += len;
		off += len;
	}
	if (nh == 0 || nh == 43 || nh == 60 || nh == 44 || nh == 51)
		return CILC_MALFORMED;
	if (off > total)
		return CILC_MALFORMED;
	c->l4_off = c->l3_off + off;
	c->proto = nh;
	if (later)
		return CILC_LATER_FRAGMENT;
	return parse_l4(c, h, total - off, data_end);
}

/* `wire` is the frame's length: at TC only the headers need be in the
 * linear part that data..data_end covers (the payload may sit in pages). */
static __always_inline int parse(struct cilc_ctx *c, void *data, void *data_end, __u32 wire)
{
	__u8 *p = data;
	__u8 *end = data_end;
	if (p + 14 > end)
		return CILC_NOT_IP;
	__u32 avail = wire;
	opaque(avail);
	__u32 type = be16(p + 12);
	__u32 off = 14;
	/* Up to two VLAN tags (802.1Q, 802.1ad). */
#pragma unroll
	for (int i = 0; i < 2; i++) {
		if (type != 0x8100 && type != 0x88a8)
			break;
		if (p + off + 4 > end)
			return CILC_NOT_IP;
		type = be16(p + off + 2);
		off += 4;
	}
	c->l3_off = off;
	if (type == 0x0800)
		return parse_ipv4(c, p + off, avail - off, data_end);
	if (type == 0x86dd)
		return parse_ipv6(c, p + off, avail - off, data_end);
	return CILC_NOT_IP;
}

/* The identity of an address: what the loader stored, or world. */
static __always_inline void identity(const __u64 *addr, int v6, __u64 *bits, __u16 *ports)
{
	struct cilc_ident_key key = { .prefixlen = 128 };
	__u64 hi = v6 ? addr[0] : 0x0000ffffULL;
	__u64 lo = v6 ? addr[1] : addr[1];
#pragma unroll
	for (int i = 0; i < 8; i++) {
		key.addr[i] = hi >> (56 - 8 * i);
		key.addr[8 + i] = lo >> (56 - 8 * i);
	}
	if (!v6) {
		/* ::ffff:a.b.c.d */
#pragma unroll
		for (int i = 0; i < 10; i++)
			key.addr[i] = 0;
		key.addr[10] = 0xff;
		key.addr[11] = 0xff;
	}
	struct cilc_ident *id = bpf_map_lookup_elem(&cilc_idents, &key);
	if (!id) {
		bits[0] = 1; /* world */
		return;
	}
#pragma unroll
	for (int i = 0; i < CILC_PRED_WORDS; i++)
		bits[i] = id->bits[i];
	if (ports) {
#pragma unroll
		for (int i = 0; i < CILC_NAMED_PORTS; i++)
			ports[i] = id->ports[i];
	}
}

/* ---- the table strategy (cilc.h) ---- */

/* The nodes live in an inner array map (of struct cilc_tnode, sized by
 * the loader) held in slot 0 of this one: a `replace` that changes only
 * the policy's data fills a new inner map and swaps it in with one update,
 * so a packet walks either the old table or the new one, never a mix, and
 * the programs stay. An empty slot drops (default-deny). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__type(key, __u32);
	__type(value, __u32);
	__uint(max_entries, 1);
} cilc_table SEC(".maps");

/* Where a walk is. Kept small: it is on the stack, which the entry,
 * cilc_judge and the classifier share (512 bytes, each frame rounded up
 * to 16). The packet's fields stay in the context. */
struct cilc_walk_state {
	/* The packet: splits read its fields (walk_fields, addresses), atom
	 * tests its identities. */
	struct cilc_ctx *ctx;
	/* The inner table, looked up once per walk: a swap in the middle of
	 * a walk does not mix two tables. */
	void *table;
	__u32 entry;
	__u32 end;
	__u32 node;
	__u32 flags;
	__u32 best;
	__u32 best_prio;
	__u32 accepted;
	__u32 result;
};

/* True while the kernel lets a loop go on (the `may_goto` instruction,
 * Linux 6.9+: the verifier checks the loop's body until its states repeat,
 * not once per turn, and the kernel ends the loop once its budget is spent:
 * millions of turns, or on newer kernels a time). The walk is one such
 * loop, a node a turn: its code is one copy of the node's cases, small
 * enough to stay in the CPU's instruction caches (16 unrolled copies in a
 * bpf_loop callback were ~1.2x slower on fw1_100k, and took twice the
 * verifier's work). */
#define can_loop                                                        \
	({                                                              \
		__label__ l_break, l_continue;                          \
		int ret = 1;                                            \
		asm volatile goto("may_goto %l[l_break]" :::: l_break); \
		goto l_continue;                                        \
	l_break:                                                        \
		ret = 0;                                                \
	l_continue:;                                                    \
		ret;                                                    \
	})

/* A diagram's first match is known: combine it as the generated code
 * does (llvm.rs `hook`). Returns 1 when the hook's decision is made. */
static __always_inline int walk_diagram_done(struct cilc_walk_state *w)
{
	__u32 best = w->best;
	w->best = 0;
	w->best_prio = 0xffffffff;
	if (w->flags & CILC_T_POLICY) {
		w->result = best ? best : (w->accepted ? w->accepted : CILC_NO_POLICY);
		return 1;
	}
	if ((best & 0x0f) == CILC_CHAIN_DROP) {
		w->result = best;
		return 1;
	}
	if (best && !w->accepted)
		w->accepted = best;
	return 0;
}

/* The node a split or jump leads to, 0 for a damaged node (node 0 is
 * never a child). Below `cut`, a; a split's other side is b; a jump's is
 * slot (v - cut) >> shift, node c + slot, when below the count, else b.
 * The 128-bit difference and shift are over the two halves. */
static __always_inline __u32 walk_split(struct cilc_walk_state *w, struct cilc_tnode *n)
{
	__u32 f = n->field;
	__u64 hi = 0, lo;
	if (f < 2) {
		const __u64 *addr = f ? w->ctx->dst : w->ctx->src;
		hi = addr[0];
		lo = addr[1];
	} else if (f < 7) {
		lo = w->ctx->walk_fields[f];
	} else {
		return 0;
	}
	__u64 bh = n->cut[0], bl = n->cut[1];
	if (hi < bh || (hi == bh && lo < bl))
		return n->a;
	if (n->kind == CILC_T_SPLIT)
		return n->b;
	__u64 dl = lo - bl;
	__u64 dh = hi - bh - (lo < bl);
	__u32 arg = n->arg;
	__u32 s = arg & 63;
	__u64 idx;
	if (arg & 64) {
		idx = dh >> s;
	} else {
		if (dh >> s)
			return n->b;
		/* (dh << 64 - s), written for s = 0 too */
		idx = (dl >> s) | ((dh << 1) << (63 - s));
	}
	return idx < (arg >> 7) ? n->c + (__u32)idx : n->b;
}

/* The node a two-level split leads to (cilc.h): its fields read as
 * 32-bit values (walk_fields: an address past 32 bits is not below any
 * 32-bit cut). */
static __always_inline __u32 walk_split2(struct cilc_walk_state *w, struct cilc_tnode *n)
{
	const __u32 *v = w->ctx->walk_fields;
	__u64 c0 = n->cut[0], c1 = n->cut[1];
	__u32 f = n->field;
	if (v[f & 7] < (c0 >> 32))
		return v[(f >> 3) & 7] < (__u32)c0 ? n->a : n->b;
	return v[n->arg & 7] < (__u32)c1 ? n->c : (__u32)(c1 >> 32);
}

/* The lowest set bit's place (x is not 0). */
static __always_inline __u32 walk_ctz(__u64 x)
{
	return __builtin_ctzll(x);
}

/* Predicate bit `arg` of end `field` (0 source, else destination). */
static __always_inline int walk_bit(struct cilc_ctx *c, __u32 field, __u32 arg)
{
	__u32 bit = arg & (CILC_PRED_WORDS * 64 - 1);
	__u64 word = field ? c->dst_bits[bit / 64] : c->src_bits[bit / 64];
	return (word >> (bit % 64)) & 1;
}

/* The next entry's root, or 0 to stop: after the last entry (the chains'
 * accept, or no policy, decides), or at a damaged entry. A part whose best
 * decision cannot beat the best of its diagram so far (priorities are
 * rule order, lower first) is skipped: its walk goes to the leaf of no
 * decision. */
static __always_inline __u32 walk_enter(struct cilc_walk_state *w)
{
	if (w->entry >= w->end) {
		w->result = w->accepted ? w->accepted : CILC_NO_POLICY;
		return 0;
	}
	struct cilc_tnode *en = bpf_map_lookup_elem(w->table, &w->entry);
	if (!en || en->kind != CILC_T_ENTRY)
		return 0;
	w->flags = en->b;
	if (en->b & CILC_T_GUARD) {
		struct cilc_ctx *c = w->ctx;
		__u64 skip = en->cut[1];
		__u32 run = skip & 0xffffff, bit = en->arg & (CILC_PRED_WORDS * 64 - 1);
		if (run == 0)
			return 0;
		__u64 word = en->field ? c->dst_bits[bit / 64] : c->src_bits[bit / 64];
		if (!((word >> (bit % 64)) & 1)) {
			/* Not this subject. A later subject of its block that the
			 * packet has: its first part, by the block's slots. */
			__u64 later = word & en->cut[0];
			if (later) {
				w->node = (__u32)(skip >> 32) + walk_ctz(later);
				en = bpf_map_lookup_elem(w->table, &w->node);
				if (!en || en->kind != CILC_T_ENTRY)
					return 0;
				w->entry = (__u32)en->cut[1];
				w->flags = en->b;
			} else {
				/* None: the run (or the rest of the block) decides
				 * nothing. */
				w->entry += run - 1;
				w->flags = (skip >> 24) & 0xff;
				return CILC_T_NONE;
			}
		}
	}
	if (en->c >= w->best_prio)
		return CILC_T_NONE;
	return en->a;
}

/* One node: the node the walk goes to next (0: the walk is over). A leaf
 * goes on to the next entry's root. */
static __always_inline __u32 walk_node(struct cilc_walk_state *w)
{
	/* The node is looked up by its place in the state, the key the
	 * lookup reads from memory. */
	struct cilc_tnode *n = bpf_map_lookup_elem(w->table, &w->node);
	if (!n)
		return 0;
	__u32 kind = n->kind;
	/* Two-level splits apart from splits and jumps: one branch for
	 * the three measured ~15 % slower (fw1_100k). */
	if (kind == CILC_T_SPLIT2) {
		/* As a split's c: nothing below beats the best so far. */
		if (((__u32)n->arg >> 3 << CILC_T_SPLIT2_PRIO_SHIFT) >= w->best_prio)
			return CILC_T_NONE;
		return walk_split2(w, n);
	}
	if (kind == CILC_T_SPLIT || kind == CILC_T_JUMP) {
		/* Nothing below beats the diagram's best so far. */
		if (kind == CILC_T_SPLIT && n->c >= w->best_prio)
			return CILC_T_NONE;
		return walk_split(w, n);
	}
	if (kind == CILC_T_LEAF) {
		if (n->a && n->b < w->best_prio) {
			w->best = n->a;
			w->best_prio = n->b;
		}
		w->entry += 1;
		if ((w->flags & CILC_T_LAST) && walk_diagram_done(w))
			return 0;
		return walk_enter(w);
	}
	/* Atom tests read the packet's identities. */
	struct cilc_ctx *c = w->ctx;
	int yes;
	if (kind == CILC_T_BIT) {
		yes = walk_bit(c, n->field, n->arg);
	} else if (kind == CILC_T_PORT) {
		/* A slot of 0: the endpoint names no such port, and a
		 * packet to port 0 must not match it (as the tree's code). */
		__u16 named = c->dst_ports[n->arg & (CILC_NAMED_PORTS - 1)];
		yes = named != 0 && named == c->dport;
	} else if (kind == CILC_T_ANY) {
		__u32 q = n->arg & (CILC_PRED_WORDS - 1);
		__u64 *bits = n->field ? c->dst_bits : c->src_bits;
		__u64 lo = n->cut[1], hi = n->cut[0];
		__u64 flip = (__u32)n->arg >> CILC_T_ANY_FLIP_SHIFT;
		__u64 m0 = (bits[q] ^ flip) & lo;
		__u64 m1 = bits[(q + 1) & (CILC_PRED_WORDS - 1)] & hi;
		/* One bit of the chain on its other side: where its
		 * first test leads then, by its rank among the chain's
		 * bits. */
		__u32 rank = 0xffffffff;
		if (m0 && !(m0 & (m0 - 1)) && !m1)
			rank = __builtin_popcountll(lo & (m0 - 1));
		else if (!m0 && m1 && !(m1 & (m1 - 1)))
			rank = __builtin_popcountll(lo) + __builtin_popcountll(hi & (m1 - 1));
		if (rank != 0xffffffff)
			return n->c + rank;
		yes = (m0 | m1) != 0;
	} else if (kind == CILC_T_FLAGS) {
		yes = (c->tcp_flags & n->arg) == n->c;
	} else {
		return 0;
	}
	return yes ? n->a : n->b;
}

__u32 cilc_walk(struct cilc_ctx *ctx, __u32 direction)
{
	/* Every head is written (table.rs): a table that was not filled, or a
	 * walk that cannot finish (a damaged node), drops the packet. */
	__u32 head = 1 + (direction & 1) * 2 + (ctx->v6 ? 1 : 0), zero = 0;
	void *table = bpf_map_lookup_elem(&cilc_table, &zero);
	if (!table)
		return CILC_DEFAULT_DENY;
	struct cilc_tnode *h = bpf_map_lookup_elem(table, &head);
	if (!h || h->kind != CILC_T_HEAD)
		return CILC_DEFAULT_DENY;
	__u32 *v = ctx->walk_fields;
	v[0] = (ctx->src[0] | (ctx->src[1] >> 32)) ? 0xffffffff : (__u32)ctx->src[1];
	v[1] = (ctx->dst[0] | (ctx->dst[1] >> 32)) ? 0xffffffff : (__u32)ctx->dst[1];
	v[2] = ctx->proto;
	v[3] = ctx->sport;
	v[4] = ctx->dport;
	v[5] = ctx->icmp_type;
	v[6] = ctx->icmp_code;
	v[7] = 0;
	struct cilc_walk_state w = {
		.ctx = ctx,
		.table = table,
		.entry = h->a,
		.end = h->a + h->b,
		.best_prio = 0xffffffff,
		.result = CILC_DEFAULT_DENY,
	};
	w.node = walk_enter(&w);
	while (w.node && can_loop)
		w.node = walk_node(&w);
	return w.result;
}

/* The classifier, once per object: a global function, so LLVM generates it
 * once for the three entries and the verifier checks it once per program,
 * on its own, from its BTF signature (its arguments are then unknown: the
 * classifier never relies on what the parser established). The
 * generated cilc_classify is inlined here, so this function carries
 * clang's debug info, which becomes its BTF. */
__attribute__((noinline)) __u32 cilc_decide(struct cilc_ctx *ctx, __u32 direction)
{
	if (!ctx) /* a global function's pointer argument may be null */
		return CILC_NOT_JUDGED;
	return cilc_classify(ctx, direction);
}

static __always_inline void count(void *map, __u32 key, __u32 len)
{
	struct cilc_count *n = bpf_map_lookup_elem(map, &key);
	if (n) {
		n->packets += 1;
		n->bytes += len;
	}
}

static __always_inline void ct_event(__u32 event)
{
	__u64 *n = bpf_map_lookup_elem(&cilc_ct_events, &event);
	if (n)
		*n += 1;
}

static __always_inline int passes(__u32 d)
{
	__u32 r = d & 0x0f;
	return r == CILC_MATCHED_ALLOW || r == CILC_NO_POLICY || r == CILC_CHAIN_ACCEPT ||
	       r == CILC_NOT_JUDGED || r == CILC_CT_REPLY || r == CILC_CT_RELATED || r == CILC_AUDIT;
}

/* ---- connection tracking ---- */

#define TCP_FIN 0x01
#define TCP_SYN 0x02
#define TCP_RST 0x04
#define TCP_ACK 0x10

union cilc_ct_key {
	struct cilc_ct_key4 v4;
	struct cilc_ct_key6 v6;
};

/* A flow's tuple: addresses, ports (an ICMP echo's identifier is the
 * request's source port and the reply's destination port, so that a reply
 * is its request reversed), protocol. */
struct cilc_tuple {
	__u64 src[2];
	__u64 dst[2];
	__u32 sport;
	__u32 dport;
	__u32 proto;
	__u32 v6;
	/* It may open a flow (not ICMP, or an echo request) / it may be a
	 * reply (not ICMP, or an echo reply): other ICMP messages have no
	 * identifier, and must not pass as the reply of some other flow. */
	__u8 opens;
	__u8 answers;
};

static __always_inline void ct_key(union cilc_ct_key *k, const struct cilc_tuple *t, __u32 dir,
				   int reverse)
{
	const __u64 *src = reverse ? t->dst : t->src;
	const __u64 *dst = reverse ? t->src : t->dst;
	__u32 sport = reverse ? t->dport : t->sport;
	__u32 dport = reverse ? t->sport : t->dport;
	__builtin_memset(k, 0, sizeof(*k));
	if (t->v6) {
		k->v6.src[0] = src[0];
		k->v6.src[1] = src[1];
		k->v6.dst[0] = dst[0];
		k->v6.dst[1] = dst[1];
		k->v6.sport = sport;
		k->v6.dport = dport;
		k->v6.proto = t->proto;
		k->v6.dir = dir;
	} else {
		k->v4.src = src[1];
		k->v4.dst = dst[1];
		k->v4.sport = sport;
		k->v4.dport = dport;
		k->v4.proto = t->proto;
		k->v4.dir = dir;
	}
}

static __always_inline void *ct_map(__u32 v6)
{
	return v6 ? (void *)&cilc_ct6 : (void *)&cilc_ct4;
}

static __always_inline void tuple_of(struct cilc_tuple *t, const struct cilc_ctx *c)
{
	t->src[0] = c->src[0];
	t->src[1] = c->src[1];
	t->dst[0] = c->dst[0];
	t->dst[1] = c->dst[1];
	t->proto = c->proto;
	t->v6 = c->v6;
	t->sport = c->sport;
	t->dport = c->dport;
	t->opens = !is_icmp(c->proto);
	t->answers = t->opens;
	int reply;
	if (icmp_echo(c->proto, c->icmp_type, &reply)) {
		t->sport = reply ? 0 : c->icmp_id;
		t->dport = reply ? c->icmp_id : 0;
		t->opens = !reply;
		t->answers = reply;
	}
}

static __always_inline __u64 ct_timeout(const struct cilc_config *cfg, __u32 state)
{
	switch (state) {
	case CILC_CT_SYN_SENT:
	case CILC_CT_SYN_RECV:
		return cfg->timeout_ns[CILC_TIMEOUT_SYN];
	case CILC_CT_ESTABLISHED:
	case CILC_CT_FIN_WAIT:
		return cfg->timeout_ns[CILC_TIMEOUT_ESTABLISHED];
	case CILC_CT_CLOSING:
	case CILC_CT_CLOSED:
		return cfg->timeout_ns[CILC_TIMEOUT_CLOSE];
	default:
		return cfg->timeout_ns[CILC_TIMEOUT_OTHER];
	}
}

/* One more packet of a tracked flow: its TCP state, counters and expiry.
 * Any packet refreshes the expiry (keepalives keep a flow alive). */
static __always_inline void ct_update(struct cilc_ct_entry *e, int reply, const struct cilc_ctx *c,
				      const struct cilc_config *cfg, __u64 now)
{
	__u32 s = e->state;
	if (c->proto == 6) {
		__u32 f = c->tcp_flags;
		if (f & TCP_RST) {
			s = CILC_CT_CLOSED;
		} else if (f & TCP_FIN) {
			e->fin |= reply ? 2 : 1;
			if (s != CILC_CT_CLOSED)
				s = e->fin == 3 ? CILC_CT_CLOSING : CILC_CT_FIN_WAIT;
		} else if ((f & TCP_SYN) && !reply && !(f & TCP_ACK)) {
			/* A new connection on the same ports after a close. */
			if (s >= CILC_CT_CLOSING) {
				s = CILC_CT_SYN_SENT;
				e->fin = 0;
			}
		} else if ((f & TCP_SYN) && reply && (f & TCP_ACK)) {
			if (s == CILC_CT_SYN_SENT)
				s = CILC_CT_SYN_RECV;
		} else if ((f & TCP_ACK) && !reply && s == CILC_CT_SYN_RECV) {
			s = CILC_CT_ESTABLISHED;
		}
	}
	e->state = s;
	e->last_seen = now;
	e->expires = now + ct_timeout(cfg, s);
	e->packets[reply & 1] += 1;
	e->bytes[reply & 1] += c->len;
}

/* TCP flags no connection sends: no SYN, ACK or RST at all, or SYN with
 * FIN or RST. */
static __always_inline int tcp_invalid(__u32 f)
{
	return !(f & (TCP_SYN | TCP_ACK | TCP_RST)) ||
	       ((f & TCP_SYN) && (f & (TCP_FIN | TCP_RST)));
}

static __always_inline int ct_live(struct cilc_ct_entry *e, __u64 now)
{
	return e && e->expires > now;
}

/* Before policy: a reply of a tracked flow passes, an ICMP error about one
 * passes, TCP flags no connection sends are dropped. Returns a decision,
 * or CILC_REASONS when policy must judge the packet. */
static __always_inline __u32 ct_before(const struct cilc_ctx *c, const struct cilc_tuple *t,
				       __u32 dir, const struct cilc_config *cfg, __u64 now)
{
	if (c->proto == 6 && tcp_invalid(c->tcp_flags))
		return CILC_CT_INVALID;
	union cilc_ct_key k;
	if (t->answers) {
		ct_key(&k, t, !dir, 1);
		struct cilc_ct_entry *e = bpf_map_lookup_elem(ct_map(c->v6), &k);
		if (ct_live(e, now)) {
			ct_update(e, 1, c, cfg, now);
			return CILC_CT_REPLY;
		}
	}
	/* An ICMP error is about a packet its receiver sent: the quoted
	 * source must be the error's destination. */
	if (c->quoted && c->q_src[0] == c->dst[0] && c->q_src[1] == c->dst[1]) {
		struct cilc_tuple q = {
			.src = { c->q_src[0], c->q_src[1] },
			.dst = { c->q_dst[0], c->q_dst[1] },
			.sport = c->q_sport,
			.dport = c->q_dport,
			.proto = c->q_proto,
			.v6 = c->v6,
		};
		/* It answers a packet of the flow's originator, or one of its
		 * responder. */
		ct_key(&k, &q, !dir, 0);
		if (ct_live(bpf_map_lookup_elem(ct_map(q.v6), &k), now))
			return CILC_CT_RELATED;
		ct_key(&k, &q, dir, 1);
		if (ct_live(bpf_map_lookup_elem(ct_map(q.v6), &k), now))
			return CILC_CT_RELATED;
	}
	return CILC_REASONS;
}

/* After policy judged a packet of the flow's own direction: a pass tracks
 * it (creating the entry for a new flow), a drop deletes any entry. */
static __always_inline void ct_after(const struct cilc_ctx *c, const struct cilc_tuple *t,
				     __u32 dir, __u32 d, const struct cilc_config *cfg, __u64 now)
{
	union cilc_ct_key k;
	ct_key(&k, t, dir, 0);
	void *map = ct_map(c->v6);
	struct cilc_ct_entry *e = bpf_map_lookup_elem(map, &k);
	if (!passes(d)) {
		if (e && bpf_map_delete_elem(map, &k) == 0)
			ct_event(CILC_CT_DELETED_BY_POLICY);
		return;
	}
	if (ct_live(e, now)) {
		ct_update(e, 0, c, cfg, now);
		return;
	}
	/* Only what may open a flow does (see cilc_tuple); a reset does not. */
	if (!t->opens || (c->proto == 6 && (c->tcp_flags & TCP_RST)))
		return;
	struct cilc_ct_entry n = {};
	__u32 state = CILC_CT_OTHER;
	if (c->proto == 6) {
		if ((c->tcp_flags & TCP_SYN) && !(c->tcp_flags & TCP_ACK)) {
			state = CILC_CT_SYN_SENT;
		} else if (c->tcp_flags & TCP_FIN) {
			state = CILC_CT_FIN_WAIT;
			ct_event(CILC_CT_PICKUP);
		} else {
			state = CILC_CT_ESTABLISHED;
			ct_event(CILC_CT_PICKUP);
		}
	}
	n.state = state;
	n.rule = d >> 4;
	n.created = now;
	n.last_seen = now;
	n.expires = now + ct_timeout(cfg, state);
	n.packets[0] = 1;
	n.bytes[0] = c->len;
	n.fin = state == CILC_CT_FIN_WAIT;
	if (bpf_map_update_elem(map, &k, &n, BPF_ANY) == 0)
		ct_event(CILC_CT_CREATED);
	else
		ct_event(CILC_CT_INSERT_FAILED);
}

/* ---- source NAT ---- */

/* The keys and entries NAT builds, in a per-CPU map value rather than on
 * the stack: cilc_judge's frame, the classifier's below it and the
 * entry's share 512 bytes. */
struct cilc_nat_work {
	struct cilc_nat_key fk;
	struct cilc_nat_key rk;
	struct cilc_nat_entry fe;
	struct cilc_nat_entry rv;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct cilc_nat_work);
	__uint(max_entries, 1);
} cilc_nat_work SEC(".maps");

static __always_inline void nat_key(struct cilc_nat_key *k, const __u64 *src, const __u64 *dst,
				    __u32 sport, __u32 dport, const struct cilc_tuple *t)
{
	__builtin_memset(k, 0, sizeof(*k));
	k->src[0] = src[0];
	k->src[1] = src[1];
	k->dst[0] = dst[0];
	k->dst[1] = dst[1];
	k->sport = sport;
	k->dport = dport;
	k->proto = t->proto;
	k->v6 = t->v6;
}

static __always_inline struct cilc_nat_work *nat_work(void)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(&cilc_nat_work, &zero);
}

/* What the entry must rewrite (cilc_nat_skb): `kind` 1 the source, 2 the
 * destination, from `old` to `new` address and port. */
static __always_inline void nat_record(struct cilc_ctx *c, __u32 kind, const __u64 *old,
				       const __u64 *new, __u32 old_port, __u32 new_port)
{
	c->nat = kind;
	c->nat_old[0] = old[0];
	c->nat_old[1] = old[1];
	c->nat_new[0] = new[0];
	c->nat_new[1] = new[1];
	c->nat_old_port = old_port;
	c->nat_new_port = new_port;
}

/* Ingress on a translating interface: a reply to a translated flow gets
 * its original destination back, in the context (so conntrack and policy
 * see the flow as it was) and, once it passes, in the packet. */
static __always_inline void snat_reverse(struct cilc_ctx *c, struct cilc_tuple *t)
{
	struct cilc_nat_work *w = nat_work();
	if (!w || !t->answers)
		return;
	nat_key(&w->rk, t->src, t->dst, t->sport, t->dport, t);
	struct cilc_nat_entry *r = bpf_map_lookup_elem(&cilc_snat_rev, &w->rk);
	if (!r)
		return;
	nat_record(c, 2, c->dst, r->addr, t->dport, r->port);
	c->dst[0] = t->dst[0] = r->addr[0];
	c->dst[1] = t->dst[1] = r->addr[1];
	t->dport = r->port;
	if (is_icmp(c->proto))
		c->icmp_id = r->port;
	else
		c->dport = r->port;
}

/* A new mapping for the flow in w->fk to address w->fe.addr: a free port
 * (the flow's own when it is in the range), tried at most
 * CILC_NAT_RETRIES times. The reverse entry is claimed first
 * (BPF_NOEXIST), so two flows never share one. Returns the port, or 0
 * when none was free. */
static __always_inline __u32 snat_allocate(const struct cilc_tuple *t, struct cilc_nat_work *w,
					   const struct cilc_config *cfg, __u64 now)
{
	__u32 min = cfg->nat_port_min;
	__u32 max = cfg->nat_port_max;
	if (!min || max < min)
		return 0;
	__u32 span = max - min + 1;
	nat_key(&w->rk, t->dst, w->fe.addr, t->dport, 0, t);
	__builtin_memset(&w->rv, 0, sizeof(w->rv));
	w->rv.addr[0] = t->src[0];
	w->rv.addr[1] = t->src[1];
	w->rv.port = t->sport;
	w->rv.seen = now;
	__u32 port = t->sport;
	int claimed = 0;
	for (int i = 0; i < CILC_NAT_RETRIES; i++) {
		if (i > 0 || port < min || port > max)
			port = min + bpf_get_prandom_u32() % span;
		w->rk.dport = port;
		long err = bpf_map_update_elem(&cilc_snat_rev, &w->rk, &w->rv, BPF_NOEXIST);
		if (err == 0) {
			claimed = 1;
			break;
		}
		if (err != -EEXIST)
			return 0; /* the table is full */
		ct_event(CILC_NAT_COLLISION);
	}
	if (!claimed)
		return 0;
	w->fe.port = port;
	w->fe.seen = now;
	if (bpf_map_update_elem(&cilc_snat, &w->fk, &w->fe, BPF_NOEXIST) != 0) {
		/* Full, or another CPU mapped the flow first: use its mapping. */
		bpf_map_delete_elem(&cilc_snat_rev, &w->rk);
		struct cilc_nat_entry *f = bpf_map_lookup_elem(&cilc_snat, &w->fk);
		if (!f)
			return 0;
		w->fe.addr[0] = f->addr[0];
		w->fe.addr[1] = f->addr[1];
		return f->port;
	}
	ct_event(CILC_NAT_CREATED);
	return port;
}

/* The rule's `snat`, when the decision is a policy allow by a rule that
 * has one. */
static __always_inline struct cilc_rule_snat *rule_snat(__u32 d, int policy)
{
	if (!policy || (d & 0x0f) != CILC_MATCHED_ALLOW || !(d >> 4))
		return 0;
	__u32 rule = (d >> 4) - 1;
	struct cilc_rule_snat *rs = bpf_map_lookup_elem(&cilc_rule_snat, &rule);
	return rs && rs->kind != CILC_SNAT_NONE ? rs : 0;
}

static __always_inline __u32 nat_drop(__u32 d, __u32 reason)
{
	return (d & ~0x0fu) | reason;
}

/* Egress on a translating interface, a packet that passes. Every packet
 * of a flow that has a mapping is translated with it, whatever decided it
 * (a reply conntrack passed, a rule without `snat` after a replacement);
 * a new flow whose deciding rule has `snat` gets a mapping. Records the
 * rewrite in the context. Returns the decision, with reason
 * CILC_NAT_EXHAUSTED or CILC_NAT_UNSUPPORTED when a packet that must be
 * translated cannot be (dropped: never sent with its original source). */
static __always_inline __u32 snat(struct cilc_ctx *c, const struct cilc_tuple *t,
				  const struct cilc_nat_iface *nif, __u32 d, int policy,
				  const struct cilc_config *cfg)
{
	struct cilc_rule_snat *rs = rule_snat(d, policy);
	struct cilc_nat_work *w = nat_work();
	/* Not registered (being detached), or no conntrack: fail closed. */
	if (!nif || !cfg || !(cfg->flags & CILC_CFG_CT) || !w)
		return rs ? nat_drop(d, CILC_NAT_UNSUPPORTED) : d;
	__u64 now = bpf_ktime_get_ns();
	/* An ICMP error about a translated flow would carry the pod's
	 * address in the packet it quotes: not translated, dropped. */
	if (c->quoted) {
		struct cilc_tuple q = { .proto = c->q_proto, .v6 = c->v6 };
		nat_key(&w->fk, c->q_dst, c->q_src, c->q_dport, c->q_sport, &q);
		if (bpf_map_lookup_elem(&cilc_snat, &w->fk))
			return nat_drop(d, CILC_NAT_UNSUPPORTED);
	}
	nat_key(&w->fk, t->src, t->dst, t->sport, t->dport, t);
	struct cilc_nat_entry *f = bpf_map_lookup_elem(&cilc_snat, &w->fk);
	if (f) {
		f->seen = now;
		nat_record(c, 1, c->src, f->addr, t->sport, f->port);
		return d;
	}
	if (!rs)
		return d;
	/* The address it leaves with, in w->fe until a mapping says. */
	__builtin_memset(&w->fe, 0, sizeof(w->fe));
	if (rs->kind == CILC_SNAT_TO) {
		/* `snat to` applies to its own family (S20). */
		if (rs->v6 != c->v6)
			return d;
		w->fe.addr[0] = rs->addr[0];
		w->fe.addr[1] = rs->addr[1];
	} else if (c->v6) {
		if (!nif->has6)
			return nat_drop(d, CILC_NAT_UNSUPPORTED);
		w->fe.addr[0] = nif->addr6[0];
		w->fe.addr[1] = nif->addr6[1];
	} else {
		if (!nif->has4)
			return nat_drop(d, CILC_NAT_UNSUPPORTED);
		w->fe.addr[1] = nif->addr4;
	}
	/* TCP, UDP, and echo requests of the packet's own ICMP. */
	int icmp = (c->proto == 1 && !c->v6) || (c->proto == 58 && c->v6);
	if (!t->opens || !(c->proto == 6 || c->proto == 17 || icmp))
		return nat_drop(d, CILC_NAT_UNSUPPORTED);
	__u32 port = snat_allocate(t, w, cfg, now);
	if (!port)
		return nat_drop(d, CILC_NAT_EXHAUSTED);
	nat_record(c, 1, c->src, w->fe.addr, t->sport, port);
	return d;
}

/* Everything after parsing, as one global function: the verifier checks
 * it once per program, from its BTF signature, instead of once for every
 * path through the parser (their states differ; here they are unknown).
 * Returns the decision (rule id + 1 << 4 | reason). */
__attribute__((noinline)) __u32 cilc_judge(struct cilc_ctx *c, __u32 direction, __u32 parsed)
{
	__u32 zero = 0;
	__u32 d;
	int policy = 0;
	if (!c) /* a global function's pointer argument may be null */
		return CILC_NOT_JUDGED;
	direction &= 1;
	struct cilc_config *cfg = bpf_map_lookup_elem(&cilc_config, &zero);
	int track = cfg && (cfg->flags & CILC_CFG_CT);
	__u64 now = track ? bpf_ktime_get_ns() : 0;
	/* Source NAT needs conntrack (the loader enforces it). */
	struct cilc_nat_iface *nif = 0;
	if (track && c->nat_hook) {
		__u32 ifindex = c->ifindex;
		nif = bpf_map_lookup_elem(&cilc_nat_ifaces, &ifindex);
	}
	/* The flow, once: conntrack reads it before and after policy. */
	struct cilc_tuple t = {};
	switch (parsed) {
	case CILC_NOT_IP:
		d = CILC_NOT_JUDGED;
		break;
	case CILC_MALFORMED:
		d = CILC_REASON_MALFORMED;
		break;
	case CILC_LATER_FRAGMENT:
		d = CILC_REASON_LATER_FRAGMENT;
		break;
	default:
		if (track)
			tuple_of(&t, c);
		if (nif && direction == CILC_INGRESS)
			snat_reverse(c, &t);
		d = track ? ct_before(c, &t, direction, cfg, now) : CILC_REASONS;
		if (d != CILC_REASONS)
			break;
		/* A reply to a mapping whose flow conntrack no longer has: not
		 * handed to the pod's policy as a new packet (which could open
		 * a flow the pod's replies would then leave untranslated by). */
		if (c->nat == 2) {
			d = CILC_NAT_UNSUPPORTED;
			break;
		}
		identity(c->src, c->v6, c->src_bits, 0);
		identity(c->dst, c->v6, c->dst_bits, c->dst_ports);
		d = cilc_decide(c, direction);
		policy = 1;
	}
	__u32 *last = bpf_map_lookup_elem(&cilc_last, &zero);
	if (last) {
		*last = d;
		/* Read back: the verifier then knows nothing of `d`, and using it
		 * as a map key below does not make every constant the classifier
		 * could produce "precise" (which would stop it from pruning the
		 * parts of a diagram walked after one another). */
		d = *(volatile __u32 *)last;
		if (c->nat_hook && direction == CILC_EGRESS && passes(d)) {
			d = snat(c, &t, nif, d, policy, cfg);
			*last = d;
		}
	}
	if (policy && track)
		ct_after(c, &t, direction, d, cfg, now);
	if (d >> 4)
		count(&cilc_rule_counts, (d >> 4) - 1, c->len);
	/* Audit passes what policy would drop, never what NAT could not
	 * translate (it would leave with the pod's address). */
	__u32 why = d & 0x0f;
	if (cfg && (cfg->flags & CILC_CFG_AUDIT) && !passes(d) && why != CILC_NAT_EXHAUSTED &&
	    why != CILC_NAT_UNSUPPORTED)
		d = (d & ~0x0fu) | CILC_AUDIT;
	count(&cilc_reason_counts, direction * CILC_REASON_SLOTS + (d & 0x0f), c->len);
	return d;
}

/* What an ICMP error quotes, read by a global function of its own that
 * takes the program's context: checked once, not once for every path
 * through the parser. */
__attribute__((noinline)) int cilc_quote_xdp(struct xdp_md *ctx, struct cilc_ctx *c)
{
	if (c && icmp_error(c->proto, c->icmp_type))
		quote(c, ctx_ptr(ctx->data), ctx_ptr(ctx->data_end));
	return 0;
}

__attribute__((noinline)) int cilc_quote_skb(struct __sk_buff *skb, struct cilc_ctx *c)
{
	if (c && icmp_error(c->proto, c->icmp_type))
		quote(c, ctx_ptr(skb->data), ctx_ptr(skb->data_end));
	return 0;
}

static __always_inline __u32 bswap32(__u32 x)
{
	return __builtin_bswap32(x);
}

/* The rewrite cilc_judge recorded in the context (c->nat: 1 source, 2
 * destination), in the packet, with the IPv4 header checksum and the L4
 * checksum (pseudo header included, except ICMPv4's) fixed by the
 * kernel's helpers, which also keep offloaded (partial) checksums right.
 * Returns 0, or -1 when the packet could not be rewritten. */
__attribute__((noinline)) int cilc_nat_skb(struct __sk_buff *skb, struct cilc_ctx *c)
{
	if (!c || !c->nat)
		return 0;
	int src = c->nat == 1;
	__u32 l3 = c->l3_off;
	__u32 l4 = c->l4_off;
	__u32 csum_off;
	__u32 port_off;
	__u64 pseudo = BPF_F_PSEUDO_HDR;
	__u64 mangled = 0;
	switch (c->proto) {
	case 6:
		csum_off = l4 + 16;
		port_off = l4 + (src ? 0 : 2);
		break;
	case 17:
		csum_off = l4 + 6;
		port_off = l4 + (src ? 0 : 2);
		mangled = BPF_F_MARK_MANGLED_0;
		break;
	case 1:
		csum_off = l4 + 2;
		port_off = l4 + 4;
		pseudo = 0;
		break;
	case 58:
		csum_off = l4 + 2;
		port_off = l4 + 4;
		break;
	default:
		return -1;
	}
	/* IPv4 UDP with checksum 0 has none. */
	int l4sum = 1;
	if (c->proto == 17 && !c->v6) {
		__u16 sum;
		if (bpf_skb_load_bytes(skb, csum_off, &sum, 2))
			return -1;
		l4sum = sum != 0;
	}
	if (!c->v6) {
		__u32 from = bswap32(c->nat_old[1]);
		__u32 to = bswap32(c->nat_new[1]);
		if (bpf_l3_csum_replace(skb, l3 + 10, from, to, 4))
			return -1;
		if (pseudo && l4sum && bpf_l4_csum_replace(skb, csum_off, from, to, pseudo | mangled | 4))
			return -1;
		if (bpf_skb_store_bytes(skb, l3 + (src ? 12 : 16), &to, 4, 0))
			return -1;
	} else {
		__be32 from[4];
		__be32 to[4];
#pragma unroll
		for (int i = 0; i < 2; i++) {
			from[2 * i] = bswap32(c->nat_old[i] >> 32);
			from[2 * i + 1] = bswap32(c->nat_old[i]);
			to[2 * i] = bswap32(c->nat_new[i] >> 32);
			to[2 * i + 1] = bswap32(c->nat_new[i]);
		}
		__s64 diff = bpf_csum_diff(from, 16, to, 16, 0);
		if (bpf_l4_csum_replace(skb, csum_off, 0, diff, pseudo | mangled))
			return -1;
		if (bpf_skb_store_bytes(skb, l3 + (src ? 8 : 24), to, 16, 0))
			return -1;
	}
	__u16 from_port = __builtin_bswap16(c->nat_old_port);
	__u16 to_port = __builtin_bswap16(c->nat_new_port);
	if (from_port != to_port) {
		if (l4sum && bpf_l4_csum_replace(skb, csum_off, from_port, to_port, mangled | 2))
			return -1;
		if (bpf_skb_store_bytes(skb, port_off, &to_port, 2, 0))
			return -1;
	}
	return 0;
}

/* BTF of every struct the context types point to, in full: otherwise LLVM
 * emits forward declarations for them in an order that varies from run to
 * run, and objects would not be reproducible. Never called. */
__attribute__((noinline)) int cilc_btf_anchor(struct bpf_sock *sk, struct bpf_flow_keys *keys)
{
	return sk && keys;
}

#define quote_(ctx, c)                                                                         \
	_Generic((ctx), struct xdp_md *: cilc_quote_xdp, struct __sk_buff *: cilc_quote_skb)(ctx, c)

/* Judge one frame: parse it into the scratch context, read what an ICMP
 * error quotes, then cilc_judge. */
#define JUDGE(ctx_, data_, data_end_, len_, dir_, nat_hook_, ifindex_, c_)            \
	({                                                                                     \
		__u32 zero_ = 0;                                                               \
		__u32 d_ = CILC_NOT_JUDGED;                                                    \
		c_ = bpf_map_lookup_elem(&cilc_scratch, &zero_);                               \
		if (c_) {                                                                      \
			__builtin_memset(c_, 0, sizeof(*c_));                                  \
			c_->nat_hook = (nat_hook_);                                            \
			c_->ifindex = (ifindex_);                                              \
			__u32 parsed_ = parse(c_, (data_), (data_end_), (len_));               \
			c_->len = (len_);                                                       \
			quote_(ctx_, c_);                                                      \
			d_ = cilc_judge(c_, (dir_), parsed_);                             \
		}                                                                              \
		d_;                                                                            \
	})

SEC("xdp")
int cilc_xdp(struct xdp_md *ctx)
{
	void *data = ctx_ptr(ctx->data);
	void *data_end = ctx_ptr(ctx->data_end);
	__u32 len = (__u8 *)data_end - (__u8 *)data;
	struct cilc_ctx *c;
	/* No translation at XDP: the loader refuses XDP on a translating
	 * interface (its replies must be translated back first, at TC). */
	return passes(JUDGE(ctx, data, data_end, len, CILC_INGRESS, 0, 0, c)) ? XDP_PASS : XDP_DROP;
}

/* Headers the parser may read, at most: Ethernet, two VLAN tags, IPv6 and
 * its extension headers, L4, and the headers an ICMP error quotes. */
#define CILC_PULL 256

/* A pass at TC lets the programs after this one run (tcx: TCX_NEXT; a
 * clsact filter: the next filter), instead of ending the chain. */
#define TC_PASS TC_ACT_UNSPEC

static __always_inline __u32 tc_judge(struct __sk_buff *skb, __u32 direction, __u32 nat_hook)
{
	__u32 want = skb->len < CILC_PULL ? skb->len : CILC_PULL;
	if ((__u8 *)ctx_ptr(skb->data) + want > (__u8 *)ctx_ptr(skb->data_end))
		bpf_skb_pull_data(skb, want);
	void *data = ctx_ptr(skb->data);
	void *data_end = ctx_ptr(skb->data_end);
	struct cilc_ctx *c;
	__u32 d = JUDGE(skb, data, data_end, skb->len, direction, nat_hook, skb->ifindex, c);
	/* A passing packet that source NAT translates is rewritten here; one
	 * that cannot be (the helpers failed) is not sent untranslated. */
	if (passes(d) && c && c->nat && cilc_nat_skb(skb, c) != 0)
		return CILC_NAT_UNSUPPORTED;
	return d;
}

SEC("tc")
int cilc_tc_ingress(struct __sk_buff *skb)
{
	return passes(tc_judge(skb, CILC_INGRESS, 0)) ? TC_PASS : TC_ACT_SHOT;
}

SEC("tc")
int cilc_tc_egress(struct __sk_buff *skb)
{
	return passes(tc_judge(skb, CILC_EGRESS, 0)) ? TC_PASS : TC_ACT_SHOT;
}

/* The same on an interface that source-NATs: replies are translated back
 * on ingress, new flows translated on egress (see cilc_judge). Separate
 * programs, so that interfaces that do not translate pay nothing for it. */
SEC("tc")
int cilc_tc_ingress_snat(struct __sk_buff *skb)
{
	return passes(tc_judge(skb, CILC_INGRESS, 1)) ? TC_PASS : TC_ACT_SHOT;
}

SEC("tc")
int cilc_tc_egress_snat(struct __sk_buff *skb)
{
	return passes(tc_judge(skb, CILC_EGRESS, 1)) ? TC_PASS : TC_ACT_SHOT;
}
