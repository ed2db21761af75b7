"""Tests of bdekit.ciphers: published XTS vectors, independent references, real images.

Every test runs twice, on the pure numpy path and on the native kernel (the ``backend``
fixture; the native half skips when the C extension is not built).

Independent sources: the IEEE 1619-2007 XTS-AES vectors (typed in below as published), the
``cryptography`` package's own XTS and CBC modes applied one sector at a time, a literal
pure-Python transcription of the Elephant diffuser formulas, and volumes encrypted by Windows
(``../shared/real-images``, skipped when absent) checked against what libbde / dissect.fve
decrypt.
"""

from __future__ import annotations

import gzip
import hashlib
import itertools
import json
import random
import shutil
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from bdekit.crypto import diffuser, native, pure
from bdekit.crypto.ciphers import SectorCipher, make_cipher
from bdekit.errors import UnsupportedError, UsageError
from bdekit.format.constants import EncryptionMethod
from tests.conftest import REAL_DIR

M = EncryptionMethod
DIFFUSERS = (M.AES_128_CBC_DIFFUSER, M.AES_256_CBC_DIFFUSER)
CBCS = (M.AES_128_CBC, M.AES_256_CBC)
XTSS = (M.AES_128_XTS, M.AES_256_XTS)
REAL_IMAGES = REAL_DIR


def rand_bytes(rng: random.Random, n: int) -> bytes:
    return rng.randbytes(n)


def key_for(method: EncryptionMethod, rng: random.Random) -> bytes:
    return rng.randbytes(method.fvek_size)


@pytest.fixture(scope="module", params=["pure", "native"], autouse=True)
def backend(request: pytest.FixtureRequest) -> Iterator[str]:
    """Every test of this module on both paths: make_cipher follows BDEKIT_PURE."""
    if request.param == "native" and not native.available():
        pytest.skip("the native sector kernel is not built")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BDEKIT_PURE", "1" if request.param == "pure" else "0")
        yield str(request.param)


def test_backend_is_the_one_asked_for(backend: str) -> None:
    for method in (M.AES_128_CBC, M.AES_256_XTS, M.AES_128_CBC_DIFFUSER):
        assert make_cipher(method, bytes(method.fvek_size)).backend == backend


# -- IEEE 1619-2007 XTS-AES test vectors --------------------------------------------------------
# Vectors 4-14 have 512-byte data units; the plaintext of 4 and 10-14 is bytes 0..255 twice,
# vectors 5, 6, 8 and 9 encrypt the ciphertext of the vector before them (same key, data unit
# numbers 0, 1, 2 and 0xfd, 0xfe, 0xff), vector 7 has its own plaintext.

XTS_KEY_128 = bytes.fromhex("27182818284590452353602874713526"
                            "31415926535897932384626433832795")
XTS_KEY_256 = bytes.fromhex("27182818284590452353602874713526"
                            "62497757247093699959574966967627"
                            "31415926535897932384626433832795"
                            "02884197169399375105820974944592")
PATTERN_512 = bytes(range(256)) * 2

_IEEE_HEX: dict[str, str] = {
    "ct4": (
        "27a7479befa1d476489f308cd4cfa6e2a96e4bbe3208ff25287dd3819616e89c"
        "c78cf7f5e543445f8333d8fa7f56000005279fa5d8b5e4ad40e736ddb4d35412"
        "328063fd2aab53e5ea1e0a9f332500a5df9487d07a5c92cc512c8866c7e860ce"
        "93fdf166a24912b422976146ae20ce846bb7dc9ba94a767aaef20c0d61ad0265"
        "5ea92dc4c4e41a8952c651d33174be51a10c421110e6d81588ede82103a252d8"
        "a750e8768defffed9122810aaeb99f9172af82b604dc4b8e51bcb08235a6f434"
        "1332e4ca60482a4ba1a03b3e65008fc5da76b70bf1690db4eae29c5f1badd03c"
        "5ccf2a55d705ddcd86d449511ceb7ec30bf12b1fa35b913f9f747a8afd1b130e"
        "94bff94effd01a91735ca1726acd0b197c4e5b03393697e126826fb6bbde8ecc"
        "1e08298516e2c9ed03ff3c1b7860f6de76d4cecd94c8119855ef5297ca67e9f3"
        "e7ff72b1e99785ca0a7e7720c5b36dc6d72cac9574c8cbbc2f801e23e56fd344"
        "b07f22154beba0f08ce8891e643ed995c94d9a69c9f1b5f499027a78572aeebd"
        "74d20cc39881c213ee770b1010e4bea718846977ae119f7a023ab58cca0ad752"
        "afe656bb3c17256a9f6e9bf19fdd5a38fc82bbe872c5539edb609ef4f79c203e"
        "bb140f2e583cb2ad15b4aa5b655016a8449277dbd477ef2c8d6c017db738b18d"
        "eb4a427d1923ce3ff262735779a418f20a282df920147beabe421ee5319d0568"
    ),
    "ct5": (
        "264d3ca8512194fec312c8c9891f279fefdd608d0c027b60483a3fa811d65ee5"
        "9d52d9e40ec5672d81532b38b6b089ce951f0f9c35590b8b978d175213f329bb"
        "1c2fd30f2f7f30492a61a532a79f51d36f5e31a7c9a12c286082ff7d2394d18f"
        "783e1a8e72c722caaaa52d8f065657d2631fd25bfd8e5baad6e527d763517501"
        "c68c5edc3cdd55435c532d7125c8614deed9adaa3acade5888b87bef641c4c99"
        "4c8091b5bcd387f3963fb5bc37aa922fbfe3df4e5b915e6eb514717bdd2a7407"
        "9a5073f5c4bfd46adf7d282e7a393a52579d11a028da4d9cd9c77124f9648ee3"
        "83b1ac763930e7162a8d37f350b2f74b8472cf09902063c6b32e8c2d9290cefb"
        "d7346d1c779a0df50edcde4531da07b099c638e83a755944df2aef1aa31752fd"
        "323dcb710fb4bfbb9d22b925bc3577e1b8949e729a90bbafeacf7f7879e7b114"
        "7e28ba0bae940db795a61b15ecf4df8db07b824bb062802cc98a9545bb2aaeed"
        "77cb3fc6db15dcd7d80d7d5bc406c4970a3478ada8899b329198eb61c193fb62"
        "75aa8ca340344a75a862aebe92eee1ce032fd950b47d7704a3876923b4ad6284"
        "4bf4a09c4dbe8b4397184b7471360c9564880aedddb9baa4af2e75394b08cd32"
        "ff479c57a07d3eab5d54de5f9738b8d27f27a9f0ab11799d7b7ffefb2704c95c"
        "6ad12c39f1e867a4b7b1d7818a4b753dfd2a89ccb45e001a03a867b187f225dd"
    ),
    "ct6": (
        "fa762a3680b76007928ed4a4f49a9456031b704782e65e16cecb54ed7d017b5e"
        "18abd67b338e81078f21edb7868d901ebe9c731a7c18b5e6dec1d6a72e078ac9"
        "a4262f860beefa14f4e821018272e411a951502b6e79066e84252c3346f3aa62"
        "344351a291d4bedc7a07618bdea2af63145cc7a4b8d4070691ae890cd65733e7"
        "946e9021a1dffc4c59f159425ee6d50ca9b135fa6162cea18a939838dc000fb3"
        "86fad086acce5ac07cb2ece7fd580b00cfa5e98589631dc25e8e2a3daf2ffdec"
        "26531659912c9d8f7a15e5865ea8fb5816d6207052bd7128cd743c12c8118791"
        "a4736811935eb982a532349e31dd401e0b660a568cb1a4711f552f55ded59f1f"
        "15bf7196b3ca12a91e488ef59d64f3a02bf45239499ac6176ae321c4a211ec54"
        "5365971c5d3f4f09d4eb139bfdf2073d33180b21002b65cc9865e76cb24cd92c"
        "874c24c18350399a936ab3637079295d76c417776b94efce3a0ef7206b151105"
        "19655c956cbd8b2489405ee2b09a6b6eebe0c53790a12a8998378b33a5b71159"
        "625f4ba49d2a2fdba59fbf0897bc7aabd8d707dc140a80f0f309f835d3da54ab"
        "584e501dfa0ee977fec543f74186a802b9a37adb3e8291eca04d66520d229e60"
        "401e7282bef486ae059aa70696e0e305d777140a7a883ecdcb69b9ff938e8a42"
        "31864c69ca2c2043bed007ff3e605e014bcf518138dc3a25c5e236171a2d01d6"
    ),
    "pt7": (
        "8e41b78c390b5af9d758bb214a67e9f6bf7727b09ac6124084c37611398fa45d"
        "aad94868600ed391fb1acd4857a95b466e62ef9f4b377244d1c152e7b30d731a"
        "ad30c716d214b707aed99eb5b5e580b3e887cf7497465651d4b60e6042051da3"
        "693c3b78c14489543be8b6ad0ba629565bba202313ba7b0d0c94a3252b676f46"
        "cc02ce0f8a7d34c0ed229129673c1f61aed579d08a9203a25aac3a77e9db6026"
        "7996db38df637356d9dcd1632e369939f2a29d89345c66e05066f1a3677aef18"
        "dea4113faeb629e46721a66d0a7e785d3e29af2594eb67dfa982affe0aac058f"
        "6e15864269b135418261fc3afb089472cf68c45dd7f231c6249ba0255e1e0338"
        "33fc4d00a3fe02132d7bc3873614b8aee34273581ea0325c81f0270affa13641"
        "d052d36f0757d484014354d02d6883ca15c24d8c3956b1bd027bcf41f151fd80"
        "23c5340e5606f37e90fdb87c86fb4fa634b3718a30bace06a66eaf8f63c4aa3b"
        "637826a87fe8cfa44282e92cb1615af3a28e53bc74c7cba1a0977be9065d0c1a"
        "5dec6c54ae38d37f37aa35283e048e5530a85c4e7a29d7b92ec0c3169cdf2a80"
        "5c7604bce60049b9fb7b8eaac10f51ae23794ceba68bb58112e293b9b692ca72"
        "1b37c662f8574ed4dba6f88e170881c82cddc1034a0ca7e284bf0962b6b26292"
        "d836fa9f73c1ac770eef0f2d3a1eaf61d3e03555fd424eedd67e18a18094f888"
    ),
    "ct7": (
        "d55f684f81f4426e9fde92a5ff02df2ac896af63962888a97910c1379e20b0a3"
        "b1db613fb7fe2e07004329ea5c22bfd33e3dbe4cf58cc608c2c26c19a2e2fe22"
        "f98732c2b5cb844cc6c0702d91e1d50fc4382a7eba5635cd602432a2306ac4ce"
        "82f8d70c8d9bc15f918fe71e74c622d5cf71178bf6e0b9cc9f2b41dd8dbe441c"
        "41cd0c73a6dc47a348f6702f9d0e9b1b1431e948e299b9ec2272ab2c5f0c7be8"
        "6affa5dec87a0bee81d3d50007edaa2bcfccb35605155ff36ed8edd4a40dcd4b"
        "243acd11b2b987bdbfaf91a7cac27e9c5aea525ee53de7b2d3332c8644402b82"
        "3e94a7db26276d2d23aa07180f76b4fd29b9c0823099c9d62c519880aee7e969"
        "7617c1497d47bf3e571950311421b6b734d38b0db91eb85331b91ea9f61530f5"
        "4512a5a52a4bad589eb69781d537f23297bb459bdad2948a29e1550bf4787e0b"
        "e95bb173cf5fab17dab7a13a052a63453d97ccec1a321954886b7a1299faaeec"
        "ae35c6eaaca753b041b5e5f093bf83397fd21dd6b3012066fcc058cc32c3b09d"
        "7562dee29509b5839392c9ff05f51f3166aaac4ac5f238038a3045e6f72e48ef"
        "0fe8bc675e82c318a268e43970271bf119b81bf6a982746554f84e72b9f00280"
        "a320a08142923c23c883423ff949827f29bbacdc1ccdb04938ce6098c95ba6b3"
        "2528f4ef78eed778b2e122ddfd1cbdd11d1c0a6783e011fc536d63d053260637"
    ),
    "ct8": (
        "72efc1ebfe1ee25975a6eb3aa8589dda2b261f1c85bdab442a9e5b2dd1d7c395"
        "7a16fc08e526d4b1223f1b1232a11af274c3d70dac57f83e0983c498f1a6f1ae"
        "cb021c3e70085a1e527f1ce41ee5911a82020161529cd82773762daf5459de94"
        "a0a82adae7e1703c808543c29ed6fb32d9e004327c1355180c995a07741493a0"
        "9c21ba01a387882da4f62534b87bb15d60d197201c0fd3bf30c1500a3ecfecdd"
        "66d8721f90bcc4c17ee925c61b0a03727a9c0d5f5ca462fbfa0af1c2513a9d9d"
        "4b5345bd27a5f6e653f751693e6b6a2b8ead57d511e00e58c45b7b8d005af792"
        "88f5c7c22fd4f1bf7a898b03a5634c6a1ae3f9fae5de4f296a2896b23e7ed43e"
        "d14fa5a2803f4d28f0d3ffcf24757677aebdb47bb388378708948a8d4126ed18"
        "39e0da29a537a8c198b3c66ab00712dd261674bf45a73d67f76914f830ca014b"
        "65596f27e4cf62de66125a5566df9975155628b400fbfb3a29040ed50faffdbb"
        "18aece7c5c44693260aab386c0a37b11b114f1c415aebb653be468179428d43a"
        "4d8bc3ec38813eca30a13cf1bb18d524f1992d44d8b1a42ea30b22e6c95b199d"
        "8d182f8840b09d059585c31ad691fa0619ff038aca2c39a943421157361717c4"
        "9d322028a74648113bd8c9d7ec77cf3c89c1ec8718ceff8516d96b34c3c614f1"
        "0699c9abc4ed0411506223bea16af35c883accdbe1104eef0cfdb54e12fb230a"
    ),
    "ct9": (
        "3260ae8dad1f4a32c5cafe3ab0eb95549d461a67ceb9e5aa2d3afb62dece0553"
        "193ba50c75be251e08d1d08f1088576c7efdfaaf3f459559571e12511753b07a"
        "f073f35da06af0ce0bbf6b8f5ccc5cea500ec1b211bd51f63b606bf6528796ca"
        "12173ba39b8935ee44ccce646f90a45bf9ccc567f0ace13dc2d53ebeedc81f58"
        "b2e41179dddf0d5a5c42f5d8506c1a5d2f8f59f3ea873cbcd0eec19acbf32542"
        "3bd3dcb8c2b1bf1d1eaed0eba7f0698e4314fbeb2f1566d1b9253008cbccf45a"
        "2b0d9c5c9c21474f4076e02be26050b99dee4fd68a4cf890e496e4fcae7b70f9"
        "4ea5a9062da0daeba1993d2ccd1dd3c244b8428801495a58b216547e7e847c46"
        "d1d756377b6242d2e5fb83bf752b54e0df71e889f3a2bb0f4c10805bf3c59037"
        "6e3c24e22ff57f7fa965577375325cea5d920db94b9c336b455f6e894c01866f"
        "e9fbb8c8d3f70a2957285f6dfb5dcd8cbf54782f8fe7766d4723819913ac7734"
        "21e3a31095866bad22c86a6036b2518b2059b4229d18c8c2ccbdf906c6cc6e82"
        "464ee57bddb0bebcb1dc645325bfb3e665ef7251082c88ebb1cf203bd779fdd3"
        "8675713c8daadd17e1cabee432b09787b6ddf3304e38b731b45df5df51b78fcf"
        "b3d32466028d0ba36555e7e11ab0ee0666061d1645d962444bc47a38188930a8"
        "4b4d561395c73c087021927ca638b7afc8a8679ccb84c26555440ec7f10445cd"
    ),
    "ct10": (
        "1c3b3a102f770386e4836c99e370cf9bea00803f5e482357a4ae12d414a3e63b"
        "5d31e276f8fe4a8d66b317f9ac683f44680a86ac35adfc3345befecb4bb188fd"
        "5776926c49a3095eb108fd1098baec70aaa66999a72a82f27d848b21d4a741b0"
        "c5cd4d5fff9dac89aeba122961d03a757123e9870f8acf1000020887891429ca"
        "2a3e7a7d7df7b10355165c8b9a6d0a7de8b062c4500dc4cd120c0f7418dae3d0"
        "b5781c34803fa75421c790dfe1de1834f280d7667b327f6c8cd7557e12ac3a0f"
        "93ec05c52e0493ef31a12d3d9260f79a289d6a379bc70c50841473d1a8cc81ec"
        "583e9645e07b8d9670655ba5bbcfecc6dc3966380ad8fecb17b6ba02469a020a"
        "84e18e8f84252070c13e9f1f289be54fbc481457778f616015e1327a02b140f1"
        "505eb309326d68378f8374595c849d84f4c333ec4423885143cb47bd71c5edae"
        "9be69a2ffeceb1bec9de244fbe15992b11b77c040f12bd8f6a975a44a0f90c29"
        "a9abc3d4d893927284c58754cce294529f8614dcd2aba991925fedc4ae74ffac"
        "6e333b93eb4aff0479da9a410e4450e0dd7ae4c6e2910900575da401fc07059f"
        "645e8b7e9bfdef33943054ff84011493c27b3429eaedb4ed5376441a77ed4385"
        "1ad77f16f541dfd269d50d6a5f14fb0aab1cbb4c1550be97f7ab4066193c4caa"
        "773dad38014bd2092fa755c824bb5e54c4f36ffda9fcea70b9c6e693e148c151"
    ),
    "ct11": (
        "77a31251618a15e6b92d1d66dffe7b50b50bad552305ba0217a610688eff7e11"
        "e1d0225438e093242d6db274fde801d4cae06f2092c728b2478559df58e837c2"
        "469ee4a4fa794e4bbc7f39bc026e3cb72c33b0888f25b4acf56a2a9804f1ce6d"
        "3d6e1dc6ca181d4b546179d55544aa7760c40d06741539c7e3cd9d2f6650b201"
        "3fd0eeb8c2b8e3d8d240ccae2d4c98320a7442e1c8d75a42d6e6cfa4c2eca179"
        "8d158c7aecdf82490f24bb9b38e108bcda12c3faf9a21141c3613b58367f922a"
        "aa26cd22f23d708dae699ad7cb40a8ad0b6e2784973dcb605684c08b8d6998c6"
        "9aac049921871ebb65301a4619ca80ecb485a31d744223ce8ddc2394828d6a80"
        "470c092f5ba413c3378fa6054255c6f9df4495862bbb3287681f931b687c888a"
        "bf844dfc8fc28331e579928cd12bd2390ae123cf03818d14dedde5c0c24c8ab0"
        "18bfca75ca096f2d531f3d1619e785f1ada437cab92e980558b3dce1474afb75"
        "bfedbf8ff54cb2618e0244c9ac0d3c66fb51598cd2db11f9be39791abe447c63"
        "094f7c453b7ff87cb5bb36b7c79efb0872d17058b83b15ab0866ad8a58656c5a"
        "7e20dbdf308b2461d97c0ec0024a2715055249cf3b478ddd4740de654f75ca68"
        "6e0d7345c69ed50cdc2a8b332b1f8824108ac937eb050585608ee734097fc090"
        "54fbff89eeaeea791f4a7ab1f9868294a4f9e27b42af8100cb9d59cef9645803"
    ),
    "ct12": (
        "e387aaa58ba483afa7e8eb469778317ecf4cf573aa9d4eac23f2cdf914e4e200"
        "a8b490e42ee646802dc6ee2b471b278195d60918ececb44bf79966f83faba049"
        "9298ebc699c0c8634715a320bb4f075d622e74c8c932004f25b41e361025b5a8"
        "7815391f6108fc4afa6a05d9303c6ba68a128a55705d415985832fdeaae6c8e1"
        "9110e84d1b1f199a2692119edc96132658f09da7c623efcec712537a3d94c0bf"
        "5d7e352ec94ae5797fdb377dc1551150721adf15bd26a8efc2fcaad56881fa9e"
        "62462c28f30ae1ceaca93c345cf243b73f542e2074a705bd2643bb9f7cc79bb6"
        "e7091ea6e232df0f9ad0d6cf502327876d82207abf2115cdacf6d5a48f6c1879"
        "a65b115f0f8b3cb3c59d15dd8c769bc014795a1837f3901b5845eb491adfefe0"
        "97b1fa30a12fc1f65ba22905031539971a10f2f36c321bb51331cdefb39e3964"
        "c7ef079994f5b69b2edd83a71ef549971ee93f44eac3938fcdd61d01fa71799d"
        "a3a8091c4c48aa9ed263ff0749df95d44fef6a0bb578ec69456aa5408ae32c7a"
        "f08ad7ba8921287e3bbee31b767be06a0e705c864a769137df28292283ea81a2"
        "480241b44d9921cdbec1bc28dc1fda114bd8e5217ac9d8ebafa720e9da4f9ace"
        "231cc949e5b96fe76ffc21063fddc83a6b8679c00d35e09576a875305bed5f36"
        "ed242c8900dd1fa965bc950dfce09b132263a1eef52dd6888c309f5a7d712826"
    ),
    "ct13": (
        "bf53d2dade78e822a4d949a9bc6766b01b06a8ef70d26748c6a7fc36d80ae4c5"
        "520f7c4ab0ac8544424fa405162fef5a6b7f229498063618d39f0003cb5fb8d1"
        "c86b643497da1ff945c8d3bedeca4f479702a7a735f043ddb1d6aaade3c4a0ac"
        "7ca7f3fa5279bef56f82cd7a2f38672e824814e10700300a055e1630b8f1cb0e"
        "919f5e942010a416e2bf48cb46993d3cb6a51c19bacf864785a00bc2ecff15d3"
        "50875b246ed53e68be6f55bd7e05cfc2b2ed6432198a6444b6d8c247fab941f5"
        "69768b5c429366f1d3f00f0345b96123d56204c01c63b22ce78baf116e525ed9"
        "0fdea39fa469494d3866c31e05f295ff21fea8d4e6e13d67e47ce722e9698a1c"
        "1048d68ebcde76b86fcf976eab8aa9790268b7068e017a8b9b749409514f1053"
        "027fd16c3786ea1bac5f15cb79711ee2abe82f5cf8b13ae73030ef5b9e4457e7"
        "5d1304f988d62dd6fc4b94ed38ba831da4b7634971b6cd8ec325d9c61c00f1df"
        "73627ed3745a5e8489f3a95c69639c32cd6e1d537a85f75cc844726e8a72fc00"
        "77ad22000f1d5078f6b866318c668f1ad03d5a5fced5219f2eabbd0aa5c0f460"
        "d183f04404a0d6f469558e81fab24a167905ab4c7878502ad3e38fdbe62a4155"
        "6cec37325759533ce8f25f367c87bb5578d667ae93f9e2fd99bcbc5f2fbba88c"
        "f6516139420fcff3b7361d86322c4bd84c82f335abb152c4a93411373aaa8220"
    ),
    "ct14": (
        "64497e5a831e4a932c09be3e5393376daa599548b816031d224bbf50a818ed23"
        "50eae7e96087c8a0db51ad290bd00c1ac1620857635bf246c176ab463be30b80"
        "8da548081ac847b158e1264be25bb0910bbc92647108089415d45fab1b3d2604"
        "e8a8eff1ae4020cfa39936b66827b23f371b92200be90251e6d73c5f86de5fd4"
        "a950781933d79a28272b782a2ec313efdfcc0628f43d744c2dc2ff3dcb66999b"
        "50c7ca895b0c64791eeaa5f29499fb1c026f84ce5b5c72ba1083cddb5ce45434"
        "631665c333b60b11593fb253c5179a2c8db813782a004856a1653011e93fb6d8"
        "76c18366dd8683f53412c0c180f9c848592d593f8609ca736317d356e13e2bff"
        "3a9f59cd9aeb19cd482593d8c46128bb32423b37a9adfb482b99453fbe25a41b"
        "f6feb4aa0bef5ed24bf73c762978025482c13115e4015aac992e5613a3b5c2f6"
        "85b84795cb6e9b2656d8c88157e52c42f978d8634c43d06fea928f2822e465aa"
        "6576e9bf419384506cc3ce3c54ac1a6f67dc66f3b30191e698380bc999b05abc"
        "e19dc0c6dcc2dd001ec535ba18deb2df1a101023108318c75dc98611a09dc48a"
        "0acdec676fabdf222f07e026f059b672b56e5cbc8e1d21bbd867dd9272120546"
        "81d70ea737134cdfce93b6f82ae22423274e58a0821cc5502e2d0ab4585e94de"
        "6975be5e0b4efce51cd3e70c25a1fbbbd609d273ad5b0d59631c531f6a0a57b9"
    ),
}
IEEE = {name: bytes.fromhex(value) for name, value in _IEEE_HEX.items()}

#: (vector, key, data unit sequence number, plaintext, ciphertext)
IEEE_512 = [
    (4, XTS_KEY_128, 0, PATTERN_512, IEEE["ct4"]),
    (5, XTS_KEY_128, 1, IEEE["ct4"], IEEE["ct5"]),
    (6, XTS_KEY_128, 2, IEEE["ct5"], IEEE["ct6"]),
    (7, XTS_KEY_128, 0xFD, IEEE["pt7"], IEEE["ct7"]),
    (8, XTS_KEY_128, 0xFE, IEEE["ct7"], IEEE["ct8"]),
    (9, XTS_KEY_128, 0xFF, IEEE["ct8"], IEEE["ct9"]),
    (10, XTS_KEY_256, 0xFF, PATTERN_512, IEEE["ct10"]),
    (11, XTS_KEY_256, 0xFFFF, PATTERN_512, IEEE["ct11"]),
    (12, XTS_KEY_256, 0xFFFFFF, PATTERN_512, IEEE["ct12"]),
    (13, XTS_KEY_256, 0xFFFFFFFF, PATTERN_512, IEEE["ct13"]),
    (14, XTS_KEY_256, 0xFFFFFFFFFF, PATTERN_512, IEEE["ct14"]),
]

#: Vectors 1-3: 32-byte data units (a 32-byte "sector").
IEEE_32 = [
    (1, bytes(32), 0, bytes(32),
     "917cf69ebd68b2ec9b9fe9a3eadda692cd43d2f59598ed858c02c2652fbf922e"),
    (2, bytes.fromhex("11" * 16 + "22" * 16), 0x3333333333, bytes.fromhex("44" * 32),
     "c454185e6a16936e39334038acef838bfb186fff7480adc4289382ecd6d394f0"),
    (3, bytes.fromhex("fffefdfcfbfaf9f8f7f6f5f4f3f2f1f0" + "22" * 16), 0x3333333333,
     bytes.fromhex("44" * 32),
     "af85336b597afc1a900b2eb21ec949d292df4c047e0b21532186a5971a227a89"),
]


@pytest.mark.parametrize(("vector", "key", "seq", "plain", "cipher_text"), IEEE_512,
                         ids=[f"vector{v[0]}" for v in IEEE_512])
def test_ieee1619_512_byte_units(vector: int, key: bytes, seq: int, plain: bytes,
                                 cipher_text: bytes) -> None:
    method = M.AES_128_XTS if len(key) == 32 else M.AES_256_XTS
    cipher = make_cipher(method, key, 512)
    out = bytearray(512)
    cipher.encrypt(plain, out, seq * 512)
    assert out[:16] == cipher_text[:16]
    assert out[-16:] == cipher_text[-16:]
    assert out == cipher_text
    back = bytearray(512)
    cipher.decrypt(cipher_text, back, seq * 512)
    assert back == plain


@pytest.mark.parametrize(("vector", "key", "seq", "plain", "cipher_hex"), IEEE_32,
                         ids=[f"vector{v[0]}" for v in IEEE_32])
def test_ieee1619_32_byte_units(vector: int, key: bytes, seq: int, plain: bytes,
                                cipher_hex: str) -> None:
    cipher = make_cipher(M.AES_128_XTS, key, 32)
    out = bytearray(32)
    cipher.encrypt(plain, out, seq * 32)
    assert out.hex() == cipher_hex
    cipher.decrypt(bytes.fromhex(cipher_hex), out, seq * 32)
    assert out == plain


@pytest.mark.parametrize(("vectors", "key"), [((4, 5, 6), XTS_KEY_128), ((7, 8, 9), XTS_KEY_128)])
def test_ieee1619_consecutive_units_as_one_chunk(vectors: tuple[int, ...], key: bytes) -> None:
    # Vectors 4-6 and 7-9 are consecutive data units under one key: one 3-sector chunk.
    rows = [row for row in IEEE_512 if row[0] in vectors]
    plain = b"".join(row[3] for row in rows)
    cipher_text = b"".join(row[4] for row in rows)
    cipher = make_cipher(M.AES_128_XTS, key)
    out = bytearray(len(plain))
    cipher.decrypt(cipher_text, out, rows[0][2] * 512)
    assert out == plain
    cipher.encrypt(plain, out, rows[0][2] * 512)
    assert out == cipher_text


# -- independent references -------------------------------------------------------------------


def ecb_encrypt(key: bytes, block: bytes) -> bytes:
    encryptor = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    return encryptor.update(block) + encryptor.finalize()


def ref_xts(key: bytes, data: bytes, offset: int, sector_size: int, *, encrypt: bool) -> bytes:
    """cryptography's XTS, one call per sector."""
    out = []
    for k in range(len(data) // sector_size):
        tweak = (offset // sector_size + k).to_bytes(16, "little")
        cipher = Cipher(algorithms.AES(key), modes.XTS(tweak))
        ctx = cipher.encryptor() if encrypt else cipher.decryptor()
        out.append(ctx.update(data[k * sector_size:(k + 1) * sector_size]) + ctx.finalize())
    return b"".join(out)


def ref_cbc_sector(key: bytes, sector: bytes, offset: int, *, encrypt: bool) -> bytes:
    iv = ecb_encrypt(key, offset.to_bytes(16, "little"))
    cipher = Cipher(algorithms.AES(key), modes.CBC(iv))
    ctx = cipher.encryptor() if encrypt else cipher.decryptor()
    return ctx.update(sector) + ctx.finalize()


def ref_cbc(key: bytes, data: bytes, offset: int, sector_size: int, *, encrypt: bool) -> bytes:
    return b"".join(
        ref_cbc_sector(key, data[k:k + sector_size], offset + k, encrypt=encrypt)
        for k in range(0, len(data), sector_size))


def rotl(x: int, r: int) -> int:
    return ((x << r) | (x >> (32 - r))) & 0xFFFFFFFF if r else x


def diffuser_a_decrypt(d: list[int]) -> None:
    n = len(d)
    for _ in range(5):
        for i in range(n):
            d[i] = (d[i] + (d[(i - 2) % n] ^ rotl(d[(i - 5) % n], (9, 0, 13, 0)[i % 4]))) \
                & 0xFFFFFFFF


def diffuser_b_decrypt(d: list[int]) -> None:
    n = len(d)
    for _ in range(3):
        for i in range(n):
            d[i] = (d[i] + (d[(i + 2) % n] ^ rotl(d[(i + 5) % n], (0, 10, 0, 25)[i % 4]))) \
                & 0xFFFFFFFF


def diffuser_a_encrypt(d: list[int]) -> None:
    n = len(d)
    for _ in range(5):
        for i in reversed(range(n)):
            d[i] = (d[i] - (d[(i - 2) % n] ^ rotl(d[(i - 5) % n], (9, 0, 13, 0)[i % 4]))) \
                & 0xFFFFFFFF


def diffuser_b_encrypt(d: list[int]) -> None:
    n = len(d)
    for _ in range(3):
        for i in reversed(range(n)):
            d[i] = (d[i] - (d[(i + 2) % n] ^ rotl(d[(i + 5) % n], (0, 10, 0, 25)[i % 4]))) \
                & 0xFFFFFFFF


def sector_key(tweak_key: bytes, offset: int) -> bytes:
    return (ecb_encrypt(tweak_key, offset.to_bytes(16, "little"))
            + ecb_encrypt(tweak_key, (offset | 0x80 << 120).to_bytes(16, "little")))


def ref_diffuser_sector(fvek: bytes, aes_bytes: int, sector: bytes, offset: int, *,
                        encrypt: bool) -> bytes:
    data_key, tweak_key = fvek[:aes_bytes], fvek[32:32 + aes_bytes]
    skey = sector_key(tweak_key, offset)
    n = len(sector) // 4
    if encrypt:
        plain = bytes(b ^ skey[i % 32] for i, b in enumerate(sector))
        words = list(struct.unpack(f"<{n}I", plain))
        diffuser_a_encrypt(words)
        diffuser_b_encrypt(words)
        return ref_cbc_sector(data_key, struct.pack(f"<{n}I", *words), offset, encrypt=True)
    words = list(struct.unpack(f"<{n}I", ref_cbc_sector(data_key, sector, offset,
                                                         encrypt=False)))
    diffuser_b_decrypt(words)
    diffuser_a_decrypt(words)
    return bytes(b ^ skey[i % 32] for i, b in enumerate(struct.pack(f"<{n}I", *words)))


def ref_diffuser(fvek: bytes, method: EncryptionMethod, data: bytes, offset: int,
                 sector_size: int, *, encrypt: bool) -> bytes:
    aes_bytes = 16 if method == M.AES_128_CBC_DIFFUSER else 32
    return b"".join(
        ref_diffuser_sector(fvek, aes_bytes, data[k:k + sector_size], offset + k,
                            encrypt=encrypt)
        for k in range(0, len(data), sector_size))


def run(cipher: SectorCipher, data: bytes, offset: int, *, encrypt: bool) -> bytes:
    out = bytearray(len(data))
    (cipher.encrypt if encrypt else cipher.decrypt)(data, out, offset)
    return bytes(out)


@pytest.fixture(params=["default-tiles", "tiny-tiles"])
def tiling(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test with the module's tile sizes, then with tiles of a few sectors, so that
    chunks of a handful of sectors already cross tile boundaries."""
    if request.param == "tiny-tiles":
        monkeypatch.setattr(pure, "_TILE_BYTES", 3 * 512)
        monkeypatch.setattr(pure, "_CBC_ENCRYPT_TILE", (2 * 512, 1))
        monkeypatch.setattr(diffuser, "_DIFFUSER_TILE", (5 * 512, 1))
        monkeypatch.setattr(native, "_TILE_BYTES", 3 * 512)
        monkeypatch.setattr(native, "_ENCRYPT_TILE", (2 * 512, 1))
    return str(request.param)


# -- XTS ----------------------------------------------------------------------------------------

@settings(max_examples=25, deadline=None)
@given(method=st.sampled_from(XTSS), sector_size=st.sampled_from([512, 4096]),
       sectors=st.integers(1, 24),
       sector_number=st.one_of(st.integers(0, 5000), st.integers(0, 2**51)),
       seed=st.integers(0, 2**32))
def test_xts_matches_cryptography_per_sector(method: EncryptionMethod, sector_size: int,
                                             sectors: int, sector_number: int,
                                             seed: int) -> None:
    rng = random.Random(seed)
    key = key_for(method, rng)
    half = len(key) // 2
    assume(key[:half] != key[half:])
    data = rand_bytes(rng, sectors * sector_size)
    offset = sector_number * sector_size
    cipher = make_cipher(method, key, sector_size)
    assert run(cipher, data, offset, encrypt=False) == ref_xts(key, data, offset, sector_size,
                                                               encrypt=False)
    assert run(cipher, data, offset, encrypt=True) == ref_xts(key, data, offset, sector_size,
                                                              encrypt=True)


@pytest.mark.parametrize("sector_size", [512, 4096])
def test_xts_large_chunk_matches_cryptography(sector_size: int, tiling: str) -> None:
    # More than one tile of the default size (512 KiB), at a sector number whose tweak
    # uses all 64 low bits.
    rng = random.Random(sector_size)
    key = rng.randbytes(64)
    data = rng.randbytes((600 << 10) // sector_size * sector_size)
    offset = (2**64 // sector_size - 2000) * sector_size
    cipher = make_cipher(M.AES_256_XTS, key, sector_size)
    assert run(cipher, data, offset, encrypt=False) == ref_xts(key, data, offset, sector_size,
                                                               encrypt=False)


# -- CBC ----------------------------------------------------------------------------------------

@settings(max_examples=25, deadline=None)
@given(method=st.sampled_from(CBCS), sector_size=st.sampled_from([512, 4096]),
       sectors=st.integers(1, 24), sector_number=st.integers(0, 2**40),
       seed=st.integers(0, 2**32))
def test_cbc_matches_reference(method: EncryptionMethod, sector_size: int, sectors: int,
                               sector_number: int, seed: int) -> None:
    rng = random.Random(seed)
    key = key_for(method, rng)
    data = rand_bytes(rng, sectors * sector_size)
    offset = sector_number * sector_size
    cipher = make_cipher(method, key, sector_size)
    assert run(cipher, data, offset, encrypt=False) == ref_cbc(key, data, offset, sector_size,
                                                               encrypt=False)
    assert run(cipher, data, offset, encrypt=True) == ref_cbc(key, data, offset, sector_size,
                                                              encrypt=True)


@pytest.mark.parametrize("method", CBCS, ids=lambda m: m.label)
def test_cbc_large_chunk_matches_reference(method: EncryptionMethod, tiling: str) -> None:
    rng = random.Random(int(method))
    key = key_for(method, rng)
    data = rng.randbytes(1100 * 512)
    offset = 7 * 2**30
    cipher = make_cipher(method, key)
    assert run(cipher, data, offset, encrypt=False) == ref_cbc(key, data, offset, 512,
                                                               encrypt=False)
    assert run(cipher, data, offset, encrypt=True) == ref_cbc(key, data, offset, 512,
                                                              encrypt=True)


def test_cbc_128_accepts_32_byte_key_and_uses_first_half() -> None:
    rng = random.Random(5)
    key = rng.randbytes(32)
    data = rng.randbytes(4 * 512)
    long_key = make_cipher(M.AES_128_CBC, key)
    short_key = make_cipher(M.AES_128_CBC, key[:16])
    assert run(long_key, data, 4096, encrypt=False) == run(short_key, data, 4096,
                                                           encrypt=False)
    assert run(long_key, data, 4096, encrypt=False) == ref_cbc(key[:16], data, 4096, 512,
                                                               encrypt=False)


# -- Elephant diffuser --------------------------------------------------------------------------

@pytest.mark.parametrize("method", DIFFUSERS, ids=lambda m: m.label)
@pytest.mark.parametrize(("sector_size", "sectors"), [(512, 7), (4096, 1), (64, 9), (32, 5)])
def test_diffuser_matches_reference(method: EncryptionMethod, sector_size: int, sectors: int,
                                    tiling: str) -> None:
    rng = random.Random(sector_size * 31 + sectors)
    key = key_for(method, rng)
    data = rng.randbytes(sectors * sector_size)
    offset = rng.randrange(2**40) * sector_size
    cipher = make_cipher(method, key, sector_size)
    assert run(cipher, data, offset, encrypt=False) == ref_diffuser(
        key, method, data, offset, sector_size, encrypt=False)
    assert run(cipher, data, offset, encrypt=True) == ref_diffuser(
        key, method, data, offset, sector_size, encrypt=True)


@settings(max_examples=10, deadline=None)
@given(method=st.sampled_from(DIFFUSERS), sectors=st.integers(1, 3),
       sector_number=st.integers(0, 2**48), seed=st.integers(0, 2**32))
def test_diffuser_matches_reference_random(method: EncryptionMethod, sectors: int,
                                           sector_number: int, seed: int) -> None:
    rng = random.Random(seed)
    key = key_for(method, rng)
    data = rng.randbytes(sectors * 512)
    cipher = make_cipher(method, key)
    offset = sector_number * 512
    assert run(cipher, data, offset, encrypt=False) == ref_diffuser(
        key, method, data, offset, 512, encrypt=False)


def test_diffuser_reference_is_an_inverse_pair() -> None:
    # The reference itself: decrypt(encrypt(x)) == x, so the two directions agree.
    rng = random.Random(1)
    key = rng.randbytes(64)
    data = rng.randbytes(512)
    cipher_text = ref_diffuser(key, M.AES_128_CBC_DIFFUSER, data, 512 * 99, 512, encrypt=True)
    assert ref_diffuser(key, M.AES_128_CBC_DIFFUSER, cipher_text, 512 * 99, 512,
                        encrypt=False) == data


def test_diffuser_uses_both_key_halves() -> None:
    rng = random.Random(2)
    key = bytearray(rng.randbytes(64))
    data = rng.randbytes(512)
    base = run(make_cipher(M.AES_128_CBC_DIFFUSER, bytes(key)), data, 0, encrypt=False)
    for position, changes in ((0, True), (16, False), (32, True), (48, False)):
        other = bytearray(key)
        other[position] ^= 1
        result = run(make_cipher(M.AES_128_CBC_DIFFUSER, bytes(other)), data, 0, encrypt=False)
        assert (result != base) is changes, position


# -- every method ---------------------------------------------------------------------------------

ALL_METHODS = tuple(EncryptionMethod)


@settings(max_examples=40, deadline=None)
@given(method=st.sampled_from(ALL_METHODS), sector_size=st.sampled_from([512, 4096]),
       sectors=st.integers(1, 12), sector_number=st.integers(0, 2**44),
       seed=st.integers(0, 2**32), in_place=st.booleans())
def test_round_trip(method: EncryptionMethod, sector_size: int, sectors: int,
                    sector_number: int, seed: int, in_place: bool) -> None:
    rng = random.Random(seed)
    cipher = make_cipher(method, key_for(method, rng), sector_size)
    plain = rng.randbytes(sectors * sector_size)
    offset = sector_number * sector_size
    if in_place:
        buf = bytearray(plain)
        cipher.encrypt(buf, buf, offset)
        encrypted = bytes(buf)
        cipher.decrypt(buf, buf, offset)
        assert buf == plain
    else:
        encrypted = run(cipher, plain, offset, encrypt=True)
        assert run(cipher, encrypted, offset, encrypt=False) == plain
    assert (encrypted == plain) is (method == M.NONE)


@settings(max_examples=20, deadline=None)
@given(method=st.sampled_from(ALL_METHODS), cuts=st.lists(st.integers(1, 40), max_size=4),
       seed=st.integers(0, 2**32))
def test_chunking_does_not_matter(method: EncryptionMethod, cuts: list[int],
                                  seed: int) -> None:
    # Decrypting a run of sectors in one call or in pieces gives the same bytes, and so does
    # decrypting a sector at a time: the offset of every piece selects its IVs / tweaks.
    rng = random.Random(seed)
    cipher = make_cipher(method, key_for(method, rng))
    total = 48
    data = rng.randbytes(total * 512)
    offset = rng.randrange(2**30) * 512
    whole = run(cipher, data, offset, encrypt=False)
    bounds = sorted({0, total, *(c % total for c in cuts)})
    pieces = b"".join(
        run(cipher, data[a * 512:b * 512], offset + a * 512, encrypt=False)
        for a, b in itertools.pairwise(bounds))
    assert pieces == whole
    single = run(cipher, data[5 * 512:6 * 512], offset + 5 * 512, encrypt=False)
    assert single == whole[5 * 512:6 * 512]


@pytest.mark.parametrize("method", ALL_METHODS, ids=lambda m: m.label)
def test_buffer_kinds_and_aliasing(method: EncryptionMethod) -> None:
    rng = random.Random(int(method))
    cipher = make_cipher(method, key_for(method, rng))
    data = rng.randbytes(6 * 512)
    expected = run(cipher, data, 1024, encrypt=False)
    # bytes -> memoryview, numpy array -> numpy array, bytearray in place
    out = bytearray(len(data))
    cipher.decrypt(data, memoryview(out), 1024)
    assert out == expected
    arr = np.frombuffer(data, dtype=np.uint32).copy()
    arr_out = np.zeros(len(data), dtype=np.uint8)
    cipher.decrypt(arr, arr_out, 1024)
    assert arr_out.tobytes() == expected
    buf = bytearray(data)
    cipher.decrypt(buf, buf, 1024)
    assert buf == expected
    # overlapping but shifted buffers behave as if the source had been copied first
    big = bytearray(data + bytes(512))
    view = memoryview(big)
    cipher.decrypt(view[:len(data)], view[512:], 1024)
    assert big[512:] == expected


def test_same_cipher_from_several_threads() -> None:
    rng = random.Random(3)
    jobs = []
    for method in (M.AES_128_CBC_DIFFUSER, M.AES_128_XTS, M.AES_256_CBC):
        cipher = make_cipher(method, key_for(method, rng))
        for k in range(4):
            data = rng.randbytes((300 + 37 * k) * 512)
            jobs.append((cipher, data, k * 2**20, run(cipher, data, k * 2**20, encrypt=False)))
    errors: list[str] = []

    def worker(part: list[tuple[SectorCipher, bytes, int, bytes]]) -> None:
        for _ in range(3):
            for cipher, data, offset, expected in part:
                if run(cipher, data, offset, encrypt=False) != expected:
                    errors.append(f"{cipher!r} at {offset}")

    threads = [threading.Thread(target=worker, args=(jobs[i::3],)) for i in range(3)]
    threads += [threading.Thread(target=worker, args=(jobs[::-1],))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors


# -- errors ---------------------------------------------------------------------------------------

def test_unknown_method() -> None:
    with pytest.raises(UnsupportedError):
        make_cipher(0x8006, bytes(32))
    with pytest.raises(UnsupportedError):
        make_cipher(0x1234, bytes(32))


@pytest.mark.parametrize(("method", "bad"), [
    (M.AES_128_CBC, 24), (M.AES_128_CBC, 64), (M.AES_256_CBC, 16), (M.AES_256_CBC, 64),
    (M.AES_128_XTS, 16), (M.AES_128_XTS, 64), (M.AES_256_XTS, 32),
    (M.AES_128_CBC_DIFFUSER, 32), (M.AES_256_CBC_DIFFUSER, 32), (M.AES_256_CBC_DIFFUSER, 0),
])
def test_wrong_key_length(method: EncryptionMethod, bad: int) -> None:
    with pytest.raises(UsageError):
        make_cipher(method, bytes(bad))


@pytest.mark.parametrize(("method", "good"), [
    (M.AES_128_CBC, 16), (M.AES_128_CBC, 32), (M.AES_256_CBC, 32), (M.AES_128_XTS, 32),
    (M.AES_256_XTS, 64), (M.AES_128_CBC_DIFFUSER, 64), (M.AES_256_CBC_DIFFUSER, 64),
    (M.NONE, 0), (0x8004, 32),
])
def test_accepted_keys(method: int, good: int) -> None:
    cipher = make_cipher(method, bytes(range(good)))
    assert cipher.method == EncryptionMethod(method)
    assert isinstance(cipher.method, EncryptionMethod)
    assert cipher.sector_size == 512


@pytest.mark.parametrize(("method", "sector_size"), [
    (M.AES_128_XTS, 0), (M.AES_128_XTS, 520), (M.AES_128_CBC, -512),
    (M.AES_128_CBC_DIFFUSER, 48), (M.NONE, 100),
])
def test_bad_sector_size(method: EncryptionMethod, sector_size: int) -> None:
    with pytest.raises(UsageError):
        make_cipher(method, bytes(method.fvek_size), sector_size)


@pytest.mark.parametrize("method", [M.AES_128_XTS, M.AES_128_CBC_DIFFUSER, M.NONE],
                         ids=lambda m: m.label)
def test_bad_buffers_and_offsets(method: EncryptionMethod) -> None:
    cipher = make_cipher(method, bytes(range(method.fvek_size)))
    with pytest.raises(UsageError):
        cipher.decrypt(bytes(1024), bytearray(512), 0)  # sizes differ
    with pytest.raises(UsageError):
        cipher.decrypt(bytes(700), bytearray(700), 0)  # not whole sectors
    with pytest.raises(UsageError):
        cipher.decrypt(bytes(512), bytearray(512), 100)  # unaligned offset
    with pytest.raises(UsageError):
        cipher.decrypt(bytes(512), bytearray(512), -512)
    with pytest.raises(UsageError):
        cipher.decrypt(bytes(1024), bytearray(1024), 2**64 - 512)  # past 2^64
    with pytest.raises(UsageError):
        cipher.decrypt(bytes(512), bytes(512), 0)  # read-only destination
    with pytest.raises(UsageError):
        cipher.decrypt(bytes(512), memoryview(bytearray(1024))[::2], 0)  # not contiguous
    cipher.decrypt(b"", bytearray(), 0)  # nothing to do
    cipher.decrypt(bytes(512), bytearray(512), 2**64 - 512)  # the last sector of 2^64
    # the same checks when one memoryview is decrypted in place (the small-read path)
    for view, offset in [(memoryview(bytearray(700)), 0), (memoryview(bytearray(512)), 100),
                         (memoryview(bytearray(512)), -512),
                         (memoryview(bytearray(1024)), 2**64 - 512),
                         (memoryview(bytes(512)), 0), (memoryview(bytearray(1024))[::2], 0)]:
        with pytest.raises(UsageError):
            cipher.decrypt(view, view, offset)


def test_plain_cipher_copies() -> None:
    cipher = make_cipher(M.NONE, b"", 512)
    data = random.Random(11).randbytes(4 * 512)
    for fn in (cipher.decrypt, cipher.encrypt):
        out = bytearray(len(data))
        fn(data, memoryview(out), 512)
        assert out == data
        arr_out = np.zeros(len(data) // 8, dtype=np.uint64)
        fn(np.frombuffer(data, dtype=np.uint32), arr_out, 0)
        assert arr_out.tobytes() == data
        view = memoryview(bytearray(data))
        fn(view, view, 1024)
        assert view == data
        for shift in (512, -512):  # partial overlap, either way: as if src were copied first
            big = bytearray(bytes(512) + data + bytes(512))
            whole = memoryview(big)
            fn(whole[512:-512], whole[512 + shift:len(big) - 512 + shift], 0)
            assert big[512 + shift:len(big) - 512 + shift] == data


#: (src, dst, offset) that every cipher refuses; numpy arrays go through the buffer protocol
BAD_ARGUMENTS = [
    (bytes(1024), bytearray(512), 0), (bytes(700), bytearray(700), 0),
    (bytes(512), bytearray(512), 100), (bytes(512), bytearray(512), -512),
    (bytes(1024), bytearray(1024), 2**64 - 512), (bytes(512), bytes(512), 0),
    (bytes(512), np.frombuffer(bytes(512), dtype=np.uint8), 0),
    (bytes(512), memoryview(bytearray(1024))[::2], 0),
    (bytes(512), np.zeros(1024, dtype=np.uint8)[::2], 0),
    (np.zeros(1024, dtype=np.uint8)[::2], bytearray(512), 0),
    (np.zeros((2, 256), dtype=np.uint8, order="F"), bytearray(512), 0),
    (512, bytearray(512), 0), (bytes(512), "x" * 512, 0),
]


@pytest.mark.parametrize(("src", "dst", "offset"), BAD_ARGUMENTS)
def test_plain_cipher_refuses_what_the_others_refuse(src: object, dst: object,
                                                     offset: int) -> None:
    plain = make_cipher(M.NONE, b"")
    others = [make_cipher(M.AES_128_XTS, bytes(32), pure=True)]
    if native.available():  # the plain cipher shares the native ciphers' checks (and words)
        others.append(make_cipher(M.AES_128_XTS, bytes(32), pure=False))
    with pytest.raises(UsageError) as refused:
        plain.decrypt(src, dst, offset)  # type: ignore[arg-type]
    for other in others:
        with pytest.raises(UsageError) as also:
            other.decrypt(src, dst, offset)  # type: ignore[arg-type]
        if other.backend == "native":
            assert str(also.value) == str(refused.value)


# -- real volumes encrypted by Windows --------------------------------------------------------

#: image name -> (method, FVEK hex) as given in ../shared/real-images/README.md
REAL_FVEKS = {
    "aes-xts_128": (M.AES_128_XTS,
                    "4eb949c473f0edfc379ad041670ddb9c4da0abdb4482a2c8bb47250493aa1ed5"),
    "aes_256": (M.AES_256_CBC,
                "dd3885ef9948c8dc6ad1b54a6c4a4b6fb74b44d1d9775ac7ed186c35f1b59022"),
    "aes_128_diffuser": (M.AES_128_CBC_DIFFUSER,
                         "10730f695df62a49cd3aa1b1c9ae3edf2229c338a3740830e2b19d2b83f9cada"
                         "268af0e0613921085edc89e1b804de354fd265acf4e5c410b47764bb9565666b"),
}
WINDOW = 1 << 20


@pytest.fixture(scope="module", params=sorted(REAL_FVEKS))
def real_volume(request: pytest.FixtureRequest,
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    name = str(request.param)
    source = REAL_IMAGES / f"{name}.bin.gz"
    if not source.is_file():
        pytest.skip(f"{source} not available")
    target = tmp_path_factory.mktemp("real") / f"{name}.bin"
    with gzip.open(source, "rb") as packed, target.open("wb") as out:
        shutil.copyfileobj(packed, out, 1 << 20)
    yield name, target
    target.unlink()


def read_at(path: Path, offset: int, size: int) -> bytes:
    with path.open("rb") as f:
        f.seek(offset)
        return f.read(size)


def relocated_boot_sector(path: Path) -> int:
    """Byte offset of the relocated NTFS boot sectors (Windows 7+ layout)."""
    metadata = struct.unpack("<Q", read_at(path, 176, 8))[0]
    return int(struct.unpack("<Q", read_at(path, metadata + 56, 8))[0])


@pytest.mark.real
def test_real_boot_sector(real_volume: tuple[str, Path]) -> None:
    name, path = real_volume
    method, fvek = REAL_FVEKS[name]
    cipher = make_cipher(method, bytes.fromhex(fvek))
    where = relocated_boot_sector(path)
    cipher_text = read_at(path, where, 512)
    sector = bytearray(512)
    cipher.decrypt(cipher_text, sector, where)
    assert sector[:11] == b"\xeb\x52\x90NTFS    "
    assert sector[510:] == b"\x55\xaa"
    again = bytearray(512)
    cipher.encrypt(sector, again, where)
    assert again == cipher_text


@pytest.mark.real
def test_real_first_window_matches_peer_tools(real_volume: tuple[str, Path]) -> None:
    """Reproduce the reference digest of window 0 (see the real-images README): the first
    8 KiB come from the relocated boot sectors, the other sectors of the first MiB whose
    ciphertext is not all zero are decrypted in place."""
    name, path = real_volume
    digests = REAL_IMAGES / "reference-digests.json"
    if not digests.is_file():
        pytest.skip(f"{digests} not available")
    count, expected = json.loads(digests.read_text())[name]["windows"]["0"]
    method, fvek = REAL_FVEKS[name]
    cipher = make_cipher(method, bytes.fromhex(fvek))
    cipher_text = read_at(path, 0, WINDOW)
    plain = bytearray(WINDOW)
    cipher.decrypt(cipher_text, plain, 0)
    where = relocated_boot_sector(path)
    relocated = read_at(path, where, 8192)
    cipher.decrypt(relocated, memoryview(plain)[:8192], where)
    digest = hashlib.sha256()
    counted = 0
    for k in range(WINDOW // 512):
        if k < 16 or any(cipher_text[k * 512:(k + 1) * 512]):
            digest.update(struct.pack("<Q", k * 512) + plain[k * 512:(k + 1) * 512])
            counted += 1
    assert (counted, digest.hexdigest()) == (count, expected)
    # and back: the first MiB re-encrypts to the image bytes (its first 8 KiB re-encrypt to
    # the relocated block)
    again = bytearray(WINDOW)
    cipher.encrypt(plain, again, 0)
    assert again[8192:] == cipher_text[8192:]
    block = bytearray(8192)
    cipher.encrypt(plain[:8192], block, where)
    assert block == relocated
