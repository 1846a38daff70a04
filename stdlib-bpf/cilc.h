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
};

_Static_assert(__builtin_offsetof(struct cilc_ctx, proto) == 32, "layout");
_Static_assert(__builtin_offsetof(struct cilc_ctx, v6) == 56, "layout");
_Static_assert(__builtin_offsetof(struct cilc_ctx, src_bits) == 64, "layout");
_Static_assert(__builtin_offsetof(struct cilc_ctx, dst_bits) == 128, "layout");
_Static_assert(__builtin_offsetof(struct cilc_ctx, dst_ports) == 192, "layout");
_Static_assert(__builtin_offsetof(struct cilc_ctx, slots) == 224, "layout");
_Static_assert(sizeof(struct cilc_ctx) == 248, "layout");

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
	CILC_REASONS = 9,
};

enum cilc_direction {
	CILC_INGRESS = 0,
	CILC_EGRESS = 1,
};

/* Defined by the code cilc generates for a policy, and inlined into
 * cilc_decide (cilc.c). */
extern __u32 cilc_classify(struct cilc_ctx *ctx, __u32 direction);

#endif
