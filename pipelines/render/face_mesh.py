"""Named regions of the 478-point face mesh (MediaPipe's topology) the renderer relies on.

Everything downstream speaks in these names; a different landmark detector only has to
produce the same 478 points (or be mapped onto these groups).
"""
from __future__ import annotations

# Contours, in order from the subject's right mouth corner / eye corner (image left).
LIPS_UPPER_OUTER = (61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291)
LIPS_LOWER_OUTER = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291)
LIPS_UPPER_INNER = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308)
LIPS_LOWER_INNER = (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308)
# Eyes: image-left eye is the subject's right eye.
EYE_R_UPPER = (33, 246, 161, 160, 159, 158, 157, 173, 133)
EYE_R_LOWER = (33, 7, 163, 144, 145, 153, 154, 155, 133)
EYE_L_UPPER = (362, 398, 384, 385, 386, 387, 388, 466, 263)
EYE_L_LOWER = (362, 382, 381, 380, 374, 373, 390, 249, 263)
BROW_R = (70, 63, 105, 66, 107, 46, 53, 52, 65, 55)
BROW_L = (300, 293, 334, 296, 336, 276, 283, 282, 295, 285)
FACE_OVAL = (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378,
             400, 377, 152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54,
             103, 67, 109)
# Lower jaw line, ear to ear through the chin (152), and the chin between lip and jaw line.
JAW = (132, 58, 172, 136, 150, 149, 176, 148, 152, 377, 400, 378, 379, 365, 397, 288, 361)
CHIN = (18, 200, 199, 175, 83, 313, 201, 421, 208, 428, 32, 262)
# Cheek points around the mouth that follow the jaw a little.
CHEEKS_LOW = (57, 287, 43, 273, 106, 335, 204, 424, 212, 432, 214, 434, 210, 430)
# Points that stay put when the mouth and eyes move (relative to the head).
STATIC = (1, 2, 4, 5, 6, 98, 327, 168, 197, 195, 10, 338, 297, 332, 284, 251, 389, 356, 454,
          234, 127, 162, 21, 54, 103, 67, 109, 323, 93, 116, 345, 123, 352, 50, 280, 187, 411,
          36, 266, 142, 371)
IRIS_R, IRIS_L = 468, 473
# Iris centre and its ring's horizontal points (the vertical ones sit under the lids).
IRIS_R_POINTS = (468, 469, 471)
IRIS_L_POINTS = (473, 474, 476)
N_POINTS = 478
