// 32-bit limb primitives shared by both fields. Each returns (low word, carry or high word).

// a * b as (low, high), from four 16 x 16-bit products: none of the sums below can overflow.
fn mul_wide(a: u32, b: u32) -> vec2<u32> {
    let a0 = a & 0xffffu;
    let a1 = a >> 16u;
    let b0 = b & 0xffffu;
    let b1 = b >> 16u;
    let p00 = a0 * b0;
    let p01 = a0 * b1;
    let p10 = a1 * b0;
    let p11 = a1 * b1;
    let mid = p01 + (p00 >> 16u) + (p10 & 0xffffu);
    let lo = (mid << 16u) | (p00 & 0xffffu);
    let hi = p11 + (mid >> 16u) + (p10 >> 16u);
    return vec2<u32>(lo, hi);
}

// t + a * b + c as (low, high); at most (2^32 - 1)^2 + 2 (2^32 - 1) < 2^64.
fn mac(t: u32, a: u32, b: u32, c: u32) -> vec2<u32> {
    let p = mul_wide(a, b);
    let s1 = p.x + t;
    let c1 = select(0u, 1u, s1 < t);
    let s2 = s1 + c;
    let c2 = select(0u, 1u, s2 < c);
    return vec2<u32>(s2, p.y + c1 + c2);
}

// a + b + carry_in (0 or 1) as (sum, carry out).
fn add_carry(a: u32, b: u32, carry_in: u32) -> vec2<u32> {
    let s1 = a + b;
    let c1 = select(0u, 1u, s1 < a);
    let s2 = s1 + carry_in;
    let c2 = select(0u, 1u, s2 < s1);
    return vec2<u32>(s2, c1 | c2);
}

// a - b - borrow_in (0 or 1) as (difference, borrow out).
fn sub_borrow(a: u32, b: u32, borrow_in: u32) -> vec2<u32> {
    let d1 = a - b;
    let b1 = select(0u, 1u, a < b);
    let d2 = d1 - borrow_in;
    let b2 = select(0u, 1u, d1 < borrow_in);
    return vec2<u32>(d2, b1 | b2);
}
