//! Known-answer tests: the ESP packets of draft-mcgrew-gcm-test-01 ("AES-GCM ESP test
//! vectors") and the ESP example of RFC 7634 Appendix A (ChaCha20-Poly1305), opened by
//! gatekit through both AEAD backends.
//!
//! Each vector gives the key, the nonce (salt ‖ IV), the AAD (SPI ‖ sequence number, or
//! SPI ‖ ESN high ‖ ESN low), the plaintext with its ESP trailer, the ciphertext and the ICV.
//! The ESP packet on the wire is SPI ‖ seq low ‖ IV ‖ ciphertext ‖ ICV (RFC 4106 §3,
//! RFC 4303 §2). The vectors' next-header values are not 4/41, so they are opened as
//! transport-mode SAs, which deliver the payload with its next header.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use gatekit_esp::{Backend, Decap, Direction, Endpoint, KeyMaterial, Mode, SaConfig, Suite};
use gatekit_packet::{DropReason, Instant, PacketBuf, PktBuf};

struct Vector {
    case: &'static str,
    key: &'static str,
    nonce: &'static str,
    aad: &'static str,
    plaintext: &'static str,
    ciphertext: &'static str,
    tag: &'static str,
}

// draft-mcgrew-gcm-test-01, section 4 onwards, in the draft's order.
const VECTORS: &[Vector] = &[
    Vector {
        case: "Test Case 2 (AES-128, 32-bit seq)",
        key: "4c80cdefbb5d10da906ac73c3613a634",
        nonce: "2e443b684956ed7e3b244cfe",
        aad: "000043218765432100000000",
        plaintext: "45000048699a000080114db7c0a80102c0a801010a9bf15638d301000001000000000000045f736970045f756470037369700963796265726369747902646b000021000101020201",
        ciphertext: "fecf537e729d5b07dc30df528dd22b768d1b98736696a6fd348509fa13ceac34cfa2436f14a3f3cf65925bf1f4a13c5d15b21e1884f5ff6247aeabb786b93bce61bc17d768fd9732",
        tag: "459018148f6cbe722fd04796562dfdb4",
    },
    Vector {
        case: "Test Case 3 (AES-128)",
        key: "feffe9928665731c6d6a8f9467308308",
        nonce: "cafebabefacedbaddecaf888",
        aad: "0000a5f80000000a",
        plaintext: "4500003e698f000080114dccc0a80102c0a801010a980035002a2343b2d001000001000000000000037369700963796265726369747902646b00000100010001",
        ciphertext: "deb22cd9b07c72c16e3a65beeb8df304a5a5897d33ae530f1ba76d5d114d2a5c3de81827c10e9a4f51330d0eec416642cfbb85a5b47e48a4ec3b9ba95d918bd1",
        tag: "83b70d3aa8bc6ee4c309e9d85a41ad4a",
    },
    Vector {
        case: "Test Case 4 (AES-256)",
        key: "abbccddef00112233445566778899aababbccddef00112233445566778899aab",
        nonce: "112233440102030405060708",
        aad: "4a2cbfe300000002",
        plaintext: "4500003069a6400080062690c0a801029389155e0a9e008b2dc57ee0000000007002400020bf0000020405b40101040201020201",
        ciphertext: "ff425c9b724599df7a3bcd510194e00d6a78107f1b0b1cbf06efae9d65a5d763748a637985771d347f0545659f14e99def842d8e",
        tag: "b335f4eecfdbf831824b4c4915956c96",
    },
    Vector {
        case: "Test Case 5 (AES-128, zero key)",
        key: "00000000000000000000000000000000",
        nonce: "000000000000000000000000",
        aad: "0000000000000001",
        plaintext: "4500003c99c500008001cb7a40679318010101010800075c020044006162636465666768696a6b6c6d6e6f707172737475767761626364656667686901020201",
        ciphertext: "4688daf2f973a392732909c331d56d60f694abaa414b5e7ff5fdcdfff5e9a284456476492719ffb64de7d9dca1e1d894bc3bd57873ed4d181d19d4d5c8c18af3",
        tag: "f821d496eeb096e98ad2b69e4799c71d",
    },
    Vector {
        case: "Test Case 6 (AES-128, ESN)",
        key: "3de09874b388e6491988d0c3607eae1f",
        nonce: "57690e434e280000a2fca1a3",
        aad: "42f67e3f1010101010101010",
        plaintext: "4500003c99c300008001cb7c40679318010101010800085c020043006162636465666768696a6b6c6d6e6f707172737475767761626364656667686901020201",
        ciphertext: "fba2caa4853cf9f0f22cb10d86dd83b0fec75691cf1a04b00d1138ec9c35791765acbd8701ad79845bf9fe3fba487bc91755e6662b4c8d0d1f5e22739530320a",
        tag: "e0d731cc978ecafaeae88f00e80d6e48",
    },
    Vector {
        case: "Test Case 7 (AES-128, ESN, short)",
        key: "3de09874b388e6491988d0c3607eae1f",
        nonce: "57690e434e280000a2fca1a3",
        aad: "42f67e3f1010101010101010",
        plaintext: "4500001c42a200008001441f406793b6e00000020a00f5ff01020201",
        ciphertext: "fba2ca845e5df9f0f22c3e6e86dd831e1fc65792cd1af9130e1379ed",
        tag: "369f071f35e034be95f112e4e7d05d35",
    },
    Vector {
        case: "Test Case 9 (AES-128, ESN)",
        key: "abbccddef00112233445566778899aab",
        nonce: "decaf888cafedebaceface74",
        aad: "000001000000000000000001",
        plaintext: "4500004933ba00007f119106c3fb1d10c2b1d326c02831ce0035dd7b800302d500004e20001e8c18d75b81dc91baa0476b91b924b280389d92c963bac046ec959b6266c04722b14923010101",
        ciphertext: "18a6fd42f72cbf4ab2a2ea901f73d814e3e7f243d95412e1c349c1d2fbec168f9190feebaf2cb01984e65863965d7472b79da345e0e780191f0d2f0e0f496c226f2127b27db35724e7845d68",
        tag: "651f57e65f354f75ff17015769623436",
    },
    Vector {
        case: "Test Case 10 (AES-256, ESN)",
        key: "abbccddef00112233445566778899aababbccddef00112233445566778899aab",
        nonce: "73616c74616e640169766563",
        aad: "17405e67156f3126dd0db99b",
        plaintext: "45080028732c00004006e9f90a0106120a01038f06b88023dd6bafbecb71260250101f646d540001",
        ciphertext: "f2d69ecdbd5a0d5b8d5ef38bad4da58d1f278fde98ef67549d524a3018d9a57ff4d3a31ce673119e",
        tag: "451626c2415771e3b7eebca614c89b35",
    },
    Vector {
        case: "Test Case 11 (AES-128, ESN)",
        key: "3de09874b388e6491988d0c3607eae1f",
        nonce: "57690e434e280000a2fca1a3",
        aad: "42f67e3f1010101010101010",
        plaintext: "45000049333e00007f119182c3fb1d10c2b1d326c02831ce0035cb458003025b000001e0001e8c18d65759d52284a0352c71475c8880391c764d6e5ee0496b325ae270c03899493915010101",
        ciphertext: "fba2cad12fc1f9f00d3cebf305410db83d7784b607323d220f24b0a97d54182800cadb0f68d99ef0e0c0c89ae9bea8884e52d65bc1afd0740f742444747b5b39ab533163aad4550ee5160975",
        tag: "cdb608c5769189609763b8e18caa81e2",
    },
    Vector {
        case: "Test Case 12 (AES-256, ESN)",
        key: "abbccddef00112233445566778899aababbccddef00112233445566778899aab",
        nonce: "73616c74616e640169766563",
        aad: "17405e67156f3126dd0db99b",
        plaintext: "636973636f0172756c657301746865016e6574776501646566696e6501746865746563686e6f6c6f67696573017468617477696c6c01646566696e65746f6d6f72726f7701020201",
        ciphertext: "d4b7ed86a1777f2ea13d6973d324c69e7b43f826fb56831226508bebd2dceb18d0a6df10e5487df074113e14c641024e3e6773d91a62ee429b043a10e3efe6b012a49363412364f8",
        tag: "c0cac587f249e56b11e24f30e44ccc76",
    },
    Vector {
        case: "Test Case 13 (AES-128, seq 0xffffffff, empty payload)",
        key: "7d773d00c144c525ac619d18c84a3f47",
        nonce: "d966426743457e9182443bc6",
        aad: "335467aeffffffff",
        plaintext: "01020201",
        ciphertext: "437f866b",
        tag: "cb3f699fe9b0822bac961c4504bef270",
    },
    Vector {
        case: "Test Case 14 (AES-128, ESN)",
        key: "abbccddef00112233445566778899aab",
        nonce: "decaf888cafedebaceface74",
        aad: "000001000000000000000001",
        plaintext: "746f016265016f72016e6f7401746f0162650001",
        ciphertext: "29c9fc69a197d038ccdd14e2ddfcaa0543332164",
        tag: "412503524303ed3c6c5f283843af8c3e",
    },
    Vector {
        case: "Test Case 15 (AES-256, ESN at 2^64-1)",
        key: "6c6567616c697a656d6172696a75616e61616e64646f69746265666f72656961",
        nonce: "7475726e333021696765746d",
        aad: "796b6963ffffffffffffffff",
        plaintext: "45000030da3a00008001df3bc0a80005c0a800010800c6cd020007006162636465666768696a6b6c6d6e6f707172737401020201",
        ciphertext: "f97ab2aa356d8edce17644ac8c78e25dd24dedbb29ebf1b64a274b39b49c3a864cd3d78ca4ae68a32b42458fb57dbe821dcc63b9",
        tag: "d0937ba2945f669368661a329fb4c053",
    },
];

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn backends() -> Vec<Backend> {
    vec![Backend::Ring, Backend::RustCrypto]
}

struct Opened {
    ep: Endpoint,
    packet: Vec<u8>,
    expect: Vec<u8>,
    next_header: u8,
    seq: u64,
}

/// Builds the SA and the wire packet of a vector.
/// `None` for the vector with SPI 0, which RFC 4303 §2.1 reserves: no SA may have it.
fn setup(v: &Vector, backend: Backend) -> Option<Opened> {
    let key = hex(v.key);
    let nonce = hex(v.nonce);
    let aad = hex(v.aad);
    let pt = hex(v.plaintext);
    let suite = if key.len() == 16 {
        Suite::AesGcm128
    } else {
        Suite::AesGcm256
    };
    let mut keymat = key.clone();
    keymat.extend_from_slice(&nonce[..4]);
    let spi = u32::from_be_bytes(aad[..4].try_into().unwrap());
    let esn = aad.len() == 12;
    let seq = if esn {
        u64::from_be_bytes(aad[4..12].try_into().unwrap())
    } else {
        u64::from(u32::from_be_bytes(aad[4..8].try_into().unwrap()))
    };
    let mut packet = aad[..4].to_vec();
    packet.extend_from_slice(&aad[aad.len() - 4..]);
    packet.extend_from_slice(&nonce[4..]);
    packet.extend_from_slice(&hex(v.ciphertext));
    packet.extend_from_slice(&hex(v.tag));
    let mut cfg = SaConfig::new(
        spi,
        Direction::Inbound,
        suite,
        KeyMaterial::new(suite, &keymat).unwrap(),
        "192.0.2.1".parse().unwrap(),
        "192.0.2.2".parse().unwrap(),
    )
    .mode(Mode::Transport)
    .esn(esn)
    .backend(backend);
    // The receiver's window sits just below the vector's number, as after earlier traffic,
    // so that the ESN high half is inferred as the sender used it.
    cfg.seq_start = seq - 1;
    let mut ep = Endpoint::default();
    if spi < 256 {
        assert!(ep.add_sa(&cfg, Instant::ZERO).is_err(), "{}", v.case);
        let mut buf = PktBuf::from_slice(&packet, 0, 0);
        assert_eq!(
            ep.decap_esp(&mut buf, Instant::ZERO),
            Decap::Drop(DropReason::UnknownSpi)
        );
        return None;
    }
    ep.add_sa(&cfg, Instant::ZERO).unwrap();
    let n = pt.len();
    let (pad, nh) = (usize::from(pt[n - 2]), pt[n - 1]);
    Some(Opened {
        ep,
        packet,
        expect: pt[..n - 2 - pad].to_vec(),
        next_header: nh,
        seq,
    })
}

#[test]
fn draft_mcgrew_gcm_test_01_opens() {
    let mut opened = 0;
    for backend in backends() {
        for v in VECTORS {
            let Some(mut o) = setup(v, backend) else {
                continue;
            };
            opened += 1;
            let mut buf = PktBuf::from_slice(&o.packet, 0, 0);
            match o.ep.decap_esp(&mut buf, Instant::ZERO) {
                Decap::Inner(d) => {
                    assert_eq!(d.seq, o.seq, "{}", v.case);
                    assert_eq!(d.next_header, o.next_header, "{}", v.case);
                }
                other => panic!("{} ({backend:?}): {other:?}", v.case),
            }
            assert_eq!(buf.data(), &o.expect[..], "{} ({backend:?})", v.case);
            // The same packet again is a replay, refused before decryption.
            let mut again = PktBuf::from_slice(&o.packet, 0, 0);
            assert_eq!(
                o.ep.decap_esp(&mut again, Instant::ZERO),
                Decap::Drop(DropReason::Replay),
                "{}",
                v.case
            );
        }
    }
    assert_eq!(opened, 2 * (VECTORS.len() - 1));
}

#[test]
fn draft_vectors_with_one_bit_flipped_fail_authentication() {
    for v in VECTORS {
        let Some(o) = setup(v, Backend::Ring) else {
            continue;
        };
        // Every byte after the SPI is covered: sequence number (AAD), IV (nonce), ciphertext, ICV.
        for i in 4..o.packet.len() {
            let Some(mut o) = setup(v, Backend::Ring) else {
                continue;
            };
            let mut p = o.packet.clone();
            p[i] ^= 0x01;
            let mut buf = PktBuf::from_slice(&p, 0, 0);
            let got = o.ep.decap_esp(&mut buf, Instant::ZERO);
            // A changed sequence number may also land outside the window (replay).
            assert!(
                matches!(
                    got,
                    Decap::Drop(DropReason::AuthFailed | DropReason::Replay)
                ),
                "{} byte {i}: {got:?}",
                v.case
            );
            let sa =
                o.ep.inbound(u32::from_be_bytes(p[..4].try_into().unwrap()))
                    .unwrap();
            assert_eq!(o.ep.sa(sa).unwrap().stats().drops.total(), 1);
        }
        drop(o);
    }
}

/// RFC 7634 Appendix A, the ESP example: a tunnel-mode ChaCha20-Poly1305 SA, SPI 0x01020304,
/// sequence number 5, IV 10 11 .. 17, carrying an ICMP echo request from 198.51.100.5 to
/// 192.0.2.5 (next header 4).
#[test]
fn rfc7634_appendix_a_opens() {
    let keymat = "808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f a0a1a2a3";
    let plaintext = hex(
        "45000054a6f200004001e778c6336405c000020508005b7a3a080000553bec100007362708090a0b0c0d0e0f\
         101112131415161718191a1b1c1d1e1f202122232425262728292a2b2c2d2e2f303132333435363701020204",
    );
    let packet = hex("0102030400000005\
         1011121314151617\
         24039428b97f417e3c13753a4f05087b67c352e6a7fab1b982d466ef407ae5c614ee8099d52844eb61aa95df\
         ab4c02f72aa71e7c4c4f64c9befe2facc638e8f3cbec163fac469b502773f6fb94e664da9165b82829f641e0\
         76aaa8266b7fb0f7b11b369907e1ad43");
    for backend in backends() {
        let suite = Suite::ChaCha20Poly1305;
        let cfg = SaConfig::new(
            0x0102_0304,
            Direction::Inbound,
            suite,
            KeyMaterial::from_hex(suite, keymat).unwrap(),
            "192.0.2.1".parse().unwrap(),
            "198.51.100.1".parse().unwrap(),
        )
        .backend(backend);
        let mut ep = Endpoint::default();
        ep.add_sa(&cfg, Instant::ZERO).unwrap();
        // A changed ciphertext byte first: refused, and the window does not move.
        let mut tampered = packet.clone();
        tampered[20] ^= 0x20;
        assert_eq!(
            ep.decap_esp(&mut PktBuf::from_slice(&tampered, 0, 0), Instant::ZERO),
            Decap::Drop(DropReason::AuthFailed)
        );
        let mut buf = PktBuf::from_slice(&packet, 0, 0);
        match ep.decap_esp(&mut buf, Instant::ZERO) {
            Decap::Inner(d) => assert_eq!((d.seq, d.next_header, d.mode), (5, 4, Mode::Tunnel)),
            other => panic!("{backend:?}: {other:?}"),
        }
        assert_eq!(buf.data(), &plaintext[..plaintext.len() - 4], "{backend:?}");
    }
}
