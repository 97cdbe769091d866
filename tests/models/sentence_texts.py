"""Product texts for the sentence-encoder tests, written for them (none from the real sample).

Short titles, titles with their description (tab-separated, as `combine_text` writes them),
raw HTML with entities, accents, emoji, numbers and units, other languages, characters that
SentencePiece's NFKC normalisation rewrites, whitespace-only and empty strings, and one long
description.
"""

_LONG_DESCRIPTION = (
    "<div><h2>Caractéristiques</h2><ul><li>Matière : PVC renforcé 0,55 mm</li>"
    "<li>Dimensions : 4,88 x 2,44 m</li><li>Garantie 2 ans</li></ul>"
    "<p>Cette b&acirc;che prot&egrave;ge votre bassin des feuilles, des insectes et du soleil. "
    "Elle limite l&#39;&eacute;vaporation et garde l&#39;eau plus chaude.</p></div> "
) * 12

PRODUCT_TEXTS: list[str] = [
    "Bâche de piscine hors sol 4x8 m",
    "Roman policier, édition de poche",
    "Console de jeux + 2 manettes",
    "Lot de 3 livres : Harry Potter, tome 1 à 3",
    "Figurine Pop! Vinyl Marvel Avengers Endgame n°452 Iron Man 10 cm",
    "Filtre à sable pour piscine, débit 6 m³/h",
    "Coussin décoratif lin 45x45 cm Joyeuses Pâques lapin",
    "Jeu de société Les Aventuriers du Rail - Europe (2-5 joueurs, dès 8 ans)",
    "Tondeuse thermique 46 cm 140 cc autotractée",
    "Puzzle 1000 pièces paysage de montagne",
    "Carte Pokémon Dracaufeu holographique 4/102 édition 1",
    "Manette sans fil compatible PS4 🎮 bleu",
    "Peluche ours brun 30 cm, très douce 🧸❤️",
    "Lampe de chevet LED ✨ tactile, 3 intensités",
    "Jouet en bois : train + 12 wagons 🚂🚃🚃",
    "ÉPÉE LASER STAR WARS - ÉDITION COLLECTOR",
    "ÇA, tome 2 — Stephen King (broché)",
    "Œuvres complètes d'Honoré de Balzac, coffret",
    "Crème hydratante visage 50 ml, peaux sèches",
    "Café en grains 1 kg, torréfaction artisanale",
    "Prix : 19,99 € TTC - livraison 48h",
    "Ventilateur colonne 45 W Ø 30 cm, 3 vitesses, minuteur 7,5 h",
    "Batterie externe 20000 mAh USB-C PD 65W",
    "Tapis de souris XXL 900x400x3 mm",
    "Kit de 24 feutres aquarelle, pointe pinceau",
    "Marvel Heroes. Juego De Tablero",
    "Soft Spot 500 Pc Jigsaw Puzzle - finished size 15x29",
    "Gesellschaftsspiel für die ganze Familie, ab 6 Jahren",
    "Pokémon カード ピカチュウ プロモ",
    "ﬁltre ½ pouce Ｗｉｆｉ ① ㎡",
    "café\u00a0crème\u2009sucré\u200bsans\u00adsucre",
    "\tGuitare acoustique 4/4 cordes acier\t",
    "Guitare électrique\tCorps en aulne, manche en érable, micros simple bobinage. Livrée avec housse.",
    "Piscine tubulaire ronde 3,66 x 0,76 m\tStructure acier galvanisé, liner PVC 3 plis, "
    "pompe de filtration 2 m³/h incluse. Montage sans outils en 30 minutes.",
    "Bache de protection pour piscine Metal Frame Ø 457 m INTEX\t"
    "Cette bâche de protection vous permettra de conserver l&#39;eau de votre piscine propre plus longtemps.",
    "<p>Taie d&#39;oreiller en coton &amp; lin, 45 x 45 cm<br />Lavable en machine &agrave; 30&deg;C</p>",
    "<b>NEUF</b> sous blister &ndash; envoi rapide &amp; soign&eacute; !!!",
    "&lt;strong&gt;Promo&lt;/strong&gt; -50% sur le 2e article",
    "<ul><li>Poids : 1,2 kg</li><li>Couleur : noir</li><li>Référence : AB-1234-FR</li></ul>",
    "Livre d'occasion - très bon état - 256 pages - ISBN 978-2-07-036822-8",
    "12345678901234567890",
    "1/6 scale 30 cm action figure, 1:18 diecast, 25% off",
    "!!! ??? ... --- ***",
    "a",
    "é",
    "🎉",
    "   ",
    "",
    "\n\n",
    "Piscine piscine piscine piscine piscine piscine piscine piscine",
    "bâche piscine " * 60,
    _LONG_DESCRIPTION,
]
