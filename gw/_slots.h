/* An object's fields read from C at their slots' offsets: gw.core.exchange.Exchange's, for the
access lines (gw/observe/_accessline.c) and the metrics' grouping (gw/observe/_grouped.c).

PERF: an Exchange's fields are slots (``@dataclass(slots=True)``); ``slot_get`` takes one at its
offset in the object, as the slot's own descriptor does, instead of the generic attribute lookup
(about 120 instructions a field). Only for an object of exactly the class given, and only while
every field is a plain slot of that class as it is now: any change to a class gives it a new
version tag, and the fields are looked up again then. Anything else, and a slot never set, takes
``PyObject_GetAttr``, which answers or raises as it always did. */

#ifndef GW_SLOTS_H
#define GW_SLOTS_H

#include <Python.h>
#include <structmember.h>

typedef struct {
    PyTypeObject *type;     /* the class whose slots are read (NULL: none yet) */
    unsigned int version;   /* its version tag when its fields were looked up */
    int usable;             /* and whether they were all plain slots then */
    int count;              /* how many fields */
    PyObject ***names;      /* each field's interned name */
    Py_ssize_t *offsets;    /* each field's offset, while ``usable`` */
} Slots;

/* Look the fields up in ``slots->type`` as it is now. */
static Py_NO_INLINE int slots_find(Slots *slots) {
    slots->usable = 0;
    for (int field = 0; field < slots->count; field++) {
        PyObject *descr = _PyType_Lookup(slots->type, *slots->names[field]); /* borrowed */
        if (descr == NULL || !Py_IS_TYPE(descr, &PyMemberDescr_Type)) break;
        PyMemberDef *member = ((PyMemberDescrObject *)descr)->d_member;
        if (member->type != T_OBJECT_EX) break;
        slots->offsets[field] = member->offset;
        slots->usable = field == slots->count - 1;
    }
    /* the lookups gave the class a version tag, if it can have one; without one (0), the
       offsets are never used: nothing would tell of a change */
    slots->version = slots->type->tp_version_tag;
    if (slots->version == 0) slots->usable = 0;
    return slots->usable;
}

/* Read ``type``'s fields from now on (a new reference to it is kept). */
static void slots_of(Slots *slots, PyTypeObject *type) {
    Py_XSETREF(slots->type, (PyTypeObject *)Py_NewRef(type));
    slots_find(slots);
}

static inline int slots_usable(Slots *slots, PyObject *object) {
    if (Py_TYPE(object) != slots->type) return 0;
    return slots->type->tp_version_tag == slots->version ? slots->usable : slots_find(slots);
}

/* Field ``field`` of ``object`` (a new reference), or NULL with an exception set. */
static inline PyObject *slot_get(Slots *slots, PyObject *object, int field) {
    if (slots_usable(slots, object)) {
        PyObject *value = *(PyObject **)((char *)object + slots->offsets[field]);
        if (value != NULL) return Py_NewRef(value);
    }
    return PyObject_GetAttr(object, *slots->names[field]);
}

#endif
