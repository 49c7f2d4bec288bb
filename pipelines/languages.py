"""Language codes: ISO 639-3 aliases of ISO 639-1 codes, and the languages a character n-gram
identifier confuses with each (the default `[langid] confusable` of a spec)."""

# ISO 639-3 (and 639-2/B, and a few individual languages of a macrolanguage) -> ISO 639-1, the
# codes of CONFUSABLE and of the language identifier (pipelines.langid).
ISO_639_ALIASES = dict(pair.split(":") for pair in """
afr:af amh:am arg:an ara:ar arb:ar asm:as aze:az azj:az bak:ba bel:be bul:bg ben:bn bre:br bos:bs cat:ca
ces:cs cze:cs cym:cy wel:cy dan:da deu:de ger:de dzo:dz ell:el gre:el eng:en epo:eo spa:es est:et ekk:et
eus:eu baq:eu fas:fa per:fa pes:fa fin:fi fao:fo fra:fr fre:fr fry:fy gle:ga gla:gd glg:gl guj:gu hau:ha
heb:he hin:hi hrv:hr hat:ht hun:hu hye:hy arm:hy ind:id ibo:ig isl:is ice:is ita:it jpn:ja jav:jv kat:ka
geo:ka kaz:kk khm:km kan:kn kor:ko kur:ku kir:ky lat:la ltz:lb lug:lg lin:ln lao:lo lit:lt lav:lv lvs:lv
mlg:mg mkd:mk mac:mk mal:ml mon:mn khk:mn mar:mr msa:ms may:ms zsm:ms mlt:mt mya:my bur:my nep:ne npi:ne
nld:nl dut:nl nno:nn nor:no nob:no nb:no oci:oc orm:om ori:or ory:or pan:pa pol:pl pus:ps por:pt que:qu
ron:ro rum:ro rus:ru kin:rw san:sa sme:se sin:si slk:sk slo:sk slv:sl sna:sn som:so sqi:sq alb:sq als:sq
srp:sr sot:st swe:sv swa:sw swh:sw tam:ta tel:te tgk:tg tha:th tuk:tk tgl:tl tur:tr tat:tt uig:ug ukr:uk
urd:ur uzb:uz uzn:uz vie:vi vol:vo wln:wa xho:xh yor:yo zho:zh chi:zh cmn:zh zul:zu
""".split())

# Languages that a character n-gram identifier confuses with the corpus language; a record
# predicted as one of these still counts as the corpus language (Galician is not Portuguese).
CONFUSABLE = {
    "gl": ["pt", "es"], "pt": ["gl"], "es": ["gl", "ca", "an", "ast"], "ca": ["oc", "es"],
    "oc": ["ca"], "ast": ["es"], "fo": ["is", "nn", "no", "da"], "is": ["fo"],
    "nn": ["no", "nb", "da", "sv"], "nb": ["no", "nn", "da", "sv"], "no": ["nb", "nn", "da", "sv"],
    "da": ["no", "nb", "nn"], "bs": ["hr", "sr"], "hr": ["bs", "sr"], "sr": ["bs", "hr"],
    "ms": ["id"], "id": ["ms"], "lb": ["de"], "af": ["nl"], "mt": ["it"], "eu": [],
}
